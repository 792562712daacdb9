"""The partner's side of field encryption: unwrap data keys, decrypt and verify fields.

Plain joserfc (any JOSE library does the same): a data key arrives as a compact JWE
(``ECDH-ES+A256KW``) to the partner's X25519 key, whose plaintext is an ``oct`` JWK; each
encrypted field is a compact JWE (``dir``, ``A256GCM``) whose protected header names the field
(``fld``) and record position (``pos``, ``partition:offset``) as critical parameters. A field is
accepted only if both match where it was found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, OKPKey
from joserfc.registry import HeaderParameter

from gateway.core.jose import b64url_decode

FIELD_REGISTRY = jwe.JWERegistry(
    header_registry={
        "fld": HeaderParameter("Field path", "str", True),
        "pos": HeaderParameter("Record position (partition:offset)", "str", True),
    },
    algorithms=["dir", "A256GCM"],
)

__all__ = [
    "FieldDecryptor",
    "FieldVerificationError",
    "leaves",
    "looks_encrypted",
]


class FieldVerificationError(Exception):
    """A field could not be decrypted or is not where it was encrypted for."""

    def __init__(self, contract: str, partition: int, offset: int, field: str, why: str) -> None:
        super().__init__(
            f"contract {contract}, partition {partition}, offset {offset}, field {field}: {why}"
        )
        self.contract, self.partition, self.offset, self.field = contract, partition, offset, field


def looks_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.count(".") == 4 and value.startswith("ey")


class FieldDecryptor:
    def __init__(self, contract: str, encryption_key: OKPKey) -> None:
        self.contract = contract
        self._private = encryption_key
        self._keys: dict[str, OctKey] = {}

    def add(self, kid: str, wrapped: str) -> None:
        """Unwrap a data key announced for ``kid``."""
        try:
            plaintext = jwe.decrypt_compact(wrapped, self._private).plaintext
            jwk = json.loads(plaintext or b"")
            key = OctKey.import_key(jwk)
        except (JoseError, ValueError, TypeError) as exc:
            raise ValueError(f"data key {kid} cannot be unwrapped ({type(exc).__name__})") from None
        if jwk.get("kid") != kid:
            raise ValueError(f"data key {kid} unwraps to a key named {jwk.get('kid')!r}")
        self._keys[kid] = key

    def missing_kids(self, record: Mapping[str, Any]) -> set[str]:
        kids = set()
        for _, value in leaves(record.get("value"), ""):
            if looks_encrypted(value):
                kid = _header(value).get("kid")
                if isinstance(kid, str) and kid not in self._keys:
                    kids.add(kid)
        return kids

    def decrypt(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with every encrypted field replaced by its verified plaintext."""
        partition, offset = int(record["partition"]), int(record["offset"])
        position = f"{partition}:{offset}"

        def fail(path: str, why: str) -> FieldVerificationError:
            return FieldVerificationError(self.contract, partition, offset, path, why)

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if not looks_encrypted(value):
                return value
            header = _header(value)
            key = self._keys.get(str(header.get("kid")))
            if key is None:
                raise fail(path, f"no data key {header.get('kid')!r}")
            try:
                decrypted = jwe.decrypt_compact(value, key, registry=FIELD_REGISTRY)
            except (JoseError, ValueError, TypeError) as exc:
                raise fail(path, f"does not decrypt ({type(exc).__name__})") from None
            if decrypted.protected.get("fld") != path or decrypted.protected.get("pos") != position:
                raise fail(path, "encrypted for another field or record")
            return json.loads(decrypted.plaintext or b"null")

        return {**record, "value": walk(record.get("value"), "")}


def _header(value: str) -> dict[str, Any]:
    try:
        head = value.split(".", 1)[0]
        parsed = json.loads(b64url_decode(head))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, f"{path}[{i}]")]
    return [(path, value)]
