"""The contracts directory: products, organisations' public keys, contracts and statements.

    contracts/products/*.yaml   data products
    contracts/*.yaml            contract versions and signed statements
    keys/<org>.jwks.json        organisations' public keys

Files are read here and handed to ``services/registry.py`` as text; a file that cannot be read
is refused like one that cannot be parsed. Changes are noticed by polling names, sizes and
modification times, which works the same on every filesystem, including the network and
container volumes operators use to distribute contracts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.core.archive import ContractArchive
from gateway.core.contracts import SchemaFile
from gateway.core.documents import MAX_DOCUMENT_BYTES, load_yaml
from gateway.errors import DocumentInvalid
from gateway.services.registry import Registry, add_documents, add_keys, add_product

KEYS_SUFFIX = ".jwks.json"

Fingerprint = tuple[tuple[str, int, int], ...]


def yaml_files(directory: Path) -> list[Path]:
    """The YAML documents directly in ``directory``, in name order."""
    return _files(directory, "*.y*ml")


def _files(directory: Path, pattern: str) -> list[Path]:
    return sorted(p for p in directory.glob(pattern) if p.is_file()) if directory.is_dir() else []


def _read(path: Path) -> str:
    """The file's text; ``OSError``/``ValueError`` when it cannot be, or is too large, to read."""
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    return path.read_text()


def _texts(paths: Iterable[Path], registry: Registry) -> Iterator[tuple[str, str]]:
    for path in paths:
        try:
            yield str(path), _read(path)
        except (OSError, ValueError) as exc:
            registry.refuse(str(path), "invalid_document", str(exc))


def read_keys(keys_dir: Path, registry: Registry) -> None:
    for path in _files(keys_dir, f"*{KEYS_SUFFIX}"):
        try:
            text = _read(path)
        except (OSError, ValueError) as exc:
            registry.refuse(str(path), "invalid_keys", str(exc))
            continue
        add_keys(registry, str(path), path.name.removesuffix(KEYS_SUFFIX), text)


def schema_files(base: Path) -> SchemaFile:
    """Reads a product's ``schema_ref``: a JSON or YAML file at or below ``base`` (the
    descriptor's directory); anything resolving outside it (a symlink, say) is refused."""
    root = base.resolve()

    def read(ref: str) -> dict[str, Any]:
        path = (base / ref).resolve()
        if not path.is_relative_to(root):
            raise DocumentInvalid("points outside the descriptor's directory")
        try:
            return load_yaml(_read(path), source=ref)
        except (OSError, ValueError) as exc:
            raise DocumentInvalid(
                f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
            ) from None

    return read


def read_products(products_dir: Path, registry: Registry) -> None:
    read_schema = schema_files(products_dir)
    for source, text in _texts(yaml_files(products_dir), registry):
        add_product(registry, source, text, read_schema)


def read_documents(
    paths: Iterable[Path],
    registry: Registry,
    *,
    gateway_org: str | None,
    now: datetime,
    archive: ContractArchive | None = None,
) -> None:
    """Contract versions and statements from ``paths``, then each contract's history."""
    texts = _texts(paths, registry)
    add_documents(registry, texts, gateway_org=gateway_org, now=now, archive=archive)


@dataclass(frozen=True)
class ContractsDirectory:
    contracts_dir: Path
    keys_dir: Path

    def load(
        self,
        *,
        gateway_org: str | None,
        now: datetime,
        settle_products: Callable[[Registry], None] | None = None,
        archive: ContractArchive | None = None,
    ) -> Registry:
        """Keys, then products (``contracts/products``; ``settle_products`` may still replace
        some), then the documents beside them (with what ``archive`` adds)."""
        registry = Registry()
        read_keys(self.keys_dir, registry)
        read_products(self.contracts_dir / "products", registry)
        if settle_products is not None:
            settle_products(registry)
        read_documents(
            yaml_files(self.contracts_dir),
            registry,
            gateway_org=gateway_org,
            now=now,
            archive=archive,
        )
        return registry

    def watched(self) -> list[Path]:
        return [self.contracts_dir, self.contracts_dir / "products", self.keys_dir]

    def fingerprint(self) -> Fingerprint:
        """Names, modification times and sizes of every file watched: a change changes it."""
        entries = []
        for directory in self.watched():
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                try:
                    stat = path.stat()
                except OSError:  # removed while listing
                    continue
                if path.is_file():
                    entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(entries))


def load_registry(
    contracts_dir: Path,
    keys_dir: Path,
    *,
    gateway_org: str | None,
    now: datetime,
    archive: ContractArchive | None = None,
) -> Registry:
    directory = ContractsDirectory(contracts_dir, keys_dir)
    return directory.load(gateway_org=gateway_org, now=now, archive=archive)
