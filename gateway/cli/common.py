"""What the command modules share: how a mistake is reported, and the parameter types that catch
a user's mistakes (a key file that cannot sign, an empty document, a URL without a scheme)
before a command starts.

Exit status: 2 for a mistake in what the user gave (click's own usage errors, a file or URL
that cannot be used, a gateway that cannot be reached); 1 for a refusal or failure of the
operation itself (a contract that does not verify, a file that would be overwritten, the
gateway refusing a request). Either way one ``Error: ...`` line, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import click

from gateway.adapters.stores.contracts_dir import schema_files
from gateway.adapters.stores.signing import read_signing_key
from gateway.core.contracts import Product, parse_product
from gateway.core.documents import load_yaml
from gateway.errors import DocumentInvalid, GatewayError


class InputError(click.ClickException):
    """What the user gave cannot be used: one ``Error:`` line and exit status 2 (as click's own
    usage errors), without the usage text."""

    exit_code = 2


@contextmanager
def reported() -> Iterator[None]:
    """A ``GatewayError`` becomes the command's error message, not a traceback: exit 2 for a
    file the user gave that cannot be used (``DocumentInvalid``), 1 for any other; an
    ``OSError`` (a directory that cannot be written, ...) is one line and exit 1 too."""
    try:
        yield
    except DocumentInvalid as exc:
        raise InputError(exc.detail) from None
    except GatewayError as exc:
        raise click.ClickException(exc.detail) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise InputError(f"{path}: cannot be read ({reason or exc})") from None


def read_product(path: Path) -> Product:
    """A product descriptor, or one ``Error:`` line naming the line and field (exit 2)."""
    text = read_text(path)
    try:
        data = load_yaml(text, source=str(path))
        return parse_product(
            data, source=str(path), text=text, schema_file=schema_files(path.parent)
        )
    except DocumentInvalid as exc:
        raise InputError(exc.detail) from None


class KeyFile(click.Path[Path]):
    """An organisation's private JWKS file that holds a private Ed25519 signing key; a public
    JWKS, an empty file, a file that is not JSON or a directory is refused with the reason."""

    name = "key file"

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(
        self,
        value: str | os.PathLike[str],
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> Path:
        path = super().convert(value, param, ctx)
        try:
            read_signing_key(path)
        except DocumentInvalid as exc:
            self.fail(exc.detail, param, ctx)
        return path


class DocumentPath(click.Path[Path]):
    """An existing document file (or, with ``dir_okay``, a directory of them); an empty file
    is refused, as it is never the document meant."""

    def __init__(self, *, dir_okay: bool = False) -> None:
        super().__init__(exists=True, dir_okay=dir_okay, path_type=Path)

    def convert(
        self,
        value: str | os.PathLike[str],
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> Path:
        path = super().convert(value, param, ctx)
        if path.is_file():
            try:
                size = path.stat().st_size
                empty = size == 0 or (size < 65536 and not path.read_bytes().strip())
            except OSError as exc:
                self.fail(f"{path}: cannot be read ({exc.strerror or exc})", param, ctx)
            if empty:
                self.fail(f"{path}: the file is empty", param, ctx)
        return path


class GatewayURL(click.ParamType[str]):
    """The gateway's base URL: ``http://`` or ``https://`` and a host."""

    name = "url"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        if "://" not in text:
            self.fail(
                f"{text!r} has no scheme; the gateway's URL starts with https:// "
                f"(or http://), e.g. https://{text or 'gateway.example'}",
                param,
                ctx,
            )
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError as exc:
            self.fail(f"{text!r} is not a valid URL ({exc})", param, ctx)
        if parts.scheme.lower() not in ("http", "https"):
            self.fail(
                f"{text!r}: the gateway speaks https:// or http://, not {parts.scheme}://",
                param,
                ctx,
            )
        if not parts.hostname:
            self.fail(f"{text!r} names no host", param, ctx)
        return text
