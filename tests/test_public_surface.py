"""The faces of the package, pinned: what partners and operators import stays deliberate."""

from __future__ import annotations

import importlib

import pytest

SURFACES = {
    # The partner SDK: installed without the server (``pip install exchange-gateway``).
    "gateway.client": {
        "ASSERTION_TYPE", "FileSink", "GatewayClient", "GatewayClientError", "Interruptions",
        "KafkaSink", "Receipt", "Sink", "SinkError", "StreamEnded", "client_assertion", "consume",
        "read_checkpoint", "write_checkpoint",
    },
    "gateway.fieldcrypto": {
        "FieldDecryptor", "FieldVerificationError", "leaves", "looks_encrypted",
    },
    # Errors and their stable codes.
    "gateway.errors": {
        "CODES", "AuthenticationFailed", "BrokerUnavailable", "ContractNotActive",
        "ContractNotFound", "CursorOutOfRange", "DocumentExists", "DocumentInvalid",
        "FilterSyntaxError", "GatewayError", "InvalidCursor", "InvalidRequest", "LedgerUnavailable",
        "LegalAuthenticationFailed", "NoEncryptionKey", "Overloaded", "QuotaExceeded",
        "SignatureInvalid", "IdempotencyInProgress", "IdempotencyKeyReused",
        "IdentityProviderUnavailable", "PayloadTooLarge", "ProductNotFound", "RecordsInvalid",
        "StoreUnavailable", "UnsupportedMediaType", "OrganisationNotFound", "SignatureRefused",
        "StateInvalid",
    },
    # The composition root and the command line.
    "gateway.bootstrap": {"Gateway", "build_gateway"},
    "gateway.cli": {"main"},
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(SURFACES))
def test_public_surface(module: str) -> None:
    imported = importlib.import_module(module)
    assert set(imported.__all__) == SURFACES[module]
    for name in imported.__all__:
        assert hasattr(imported, name), name
