"""The stable error codes: one table, and nothing outside it (partners code against them)."""

from __future__ import annotations

import re
from pathlib import Path

import gateway.errors as errors
from gateway.errors import CODES, GatewayError

GATEWAY = Path(errors.__file__).parent

#: The table as partners know it. A code may be added here and in CODES; never renamed or removed.
PINNED = {
    "invalid_parameter", "invalid_cursor", "unknown_key", "invalid_token", "token_expired",
    "legal_login_required", "contract_not_active", "contract_not_found", "not_found",
    "method_not_allowed", "not_acceptable", "quota_exceeded", "too_many_streams",
    "quota_exhausted", "too_many_requests", "broker_unavailable", "product_unavailable",
    "ledger_unavailable", "document_invalid", "document_exists", "signature_invalid",
    "signature_missing", "invalid_filter", "gateway_error", "internal_error", "invalid_client",
    "invalid_request", "unsupported_grant_type", "unauthorized_client", "invalid_scope",
    "cursor_out_of_range", "overloaded", "identity_provider_unavailable", "product_not_found",
    "payload_too_large", "records_invalid", "idempotency_key_reused", "idempotency_in_progress",
    "store_unavailable", "unsupported_media_type", "schema_registry_unavailable",
    "signature_refused", "wrong_organisation", "not_offered", "offer_expired", "receipt_invalid",
    "organisation_not_found",
}  # fmt: skip


def subclasses(cls: type[GatewayError]) -> set[type[GatewayError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def test_no_code_is_renamed_or_removed() -> None:
    assert set(CODES) >= PINNED, f"removed: {sorted(PINNED - set(CODES))}"
    assert set(CODES) == PINNED, f"new codes go into PINNED too: {sorted(set(CODES) - PINNED)}"


def test_every_error_class_has_a_listed_code() -> None:
    classes: set[type[GatewayError]] = {GatewayError, *subclasses(GatewayError)}
    for cls in classes:
        assert cls.code in CODES, cls


def test_every_code_the_source_names_is_listed() -> None:
    """``code="…"`` arguments and the HTTP adapter's own codes are all in the table."""
    pattern = re.compile(
        r'\bcode\s*=\s*"([a-z_]+)"|"((?:not_found|method_not_allowed|not_acceptable|internal_error|invalid_parameter))"'
    )
    named = set()
    for path in GATEWAY.rglob("*.py"):
        for match in pattern.finditer(path.read_text()):
            named.add(match.group(1) or match.group(2))
    assert named, "the pattern finds the codes"
    assert named <= set(CODES), sorted(named - set(CODES))


def test_the_token_endpoint_s_errors_are_listed() -> None:
    from gateway.adapters.http.routes.oauth import _ERROR_TITLES

    assert set(_ERROR_TITLES) <= set(CODES)


#: Codes only the internal API (teams publishing products) answers: docs/publishing.md.
INTERNAL = {
    "product_not_found", "identity_provider_unavailable", "payload_too_large",
    "unsupported_media_type", "records_invalid", "idempotency_key_reused",
    "idempotency_in_progress", "store_unavailable",
}  # fmt: skip


def test_the_partner_and_publishing_docs_list_every_http_code() -> None:
    partners = (GATEWAY.parent / "docs" / "partners.md").read_text()
    publishing = (GATEWAY.parent / "docs" / "publishing.md").read_text()
    http = set(CODES) - INTERNAL - {
        "document_invalid", "document_exists", "signature_invalid", "signature_missing",
        "invalid_filter", "gateway_error", "legal_login_required", "quota_exceeded",
        "unauthorized_client", "invalid_scope",
    }  # fmt: skip
    missing = sorted(code for code in http if f"`{code}`" not in partners)
    assert not missing, f"docs/partners.md does not list {missing}"
    missing = sorted(code for code in INTERNAL if f"`{code}`" not in publishing)
    assert not missing, f"docs/publishing.md does not list {missing}"
