"""The gateway's errors: one root, each with a stable machine-readable ``code``.

Only ``adapters/http`` turns these into status codes (RFC 9457 problem details); the rest of
the code raises them by what went wrong in the domain. The hierarchy::

    GatewayError
    ├── InvalidRequest                 a parameter the caller sent is malformed
    │   └── InvalidCursor              an edited cursor, or one of another contract
    ├── AuthenticationFailed           missing, invalid or expired access token
    ├── ContractNotFound               unknown contract, or another organisation's (same answer)
    ├── ContractNotActive              the caller's contract exists but may not be used now
    │   └── NoEncryptionKey            the consumer publishes no key to encrypt its fields to
    ├── DocumentInvalid                a product, contract or key document is malformed
    │   └── SignatureInvalid           a signature does not verify
    ├── QuotaExceeded                  a concurrency, daily-volume or request-rate quota refuses
    ├── BrokerUnavailable              Kafka cannot be reached or the product's topic is missing
    └── LedgerUnavailable              deliveries cannot be recorded, so none may start

Messages never contain secrets, tokens or record contents.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: str = "gateway_error"
    title: str = "Gateway error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    code = "invalid_parameter"
    title = "Invalid request parameter"


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"
    title = "Invalid cursor"


class AuthenticationFailed(GatewayError):
    code = "invalid_token"
    title = "Authentication failed"
    #: The ``WWW-Authenticate`` challenge; ``None`` means a Bearer challenge (RFC 6750).
    challenge: str | None = None


class ContractNotFound(GatewayError):
    code = "contract_not_found"
    title = "Contract not found"


class ContractNotActive(GatewayError):
    """``code`` is ``contract_not_active``; ``reason`` says why (expired, not_yet_valid, …)."""

    code = "contract_not_active"
    title = "Contract not active"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class NoEncryptionKey(ContractNotActive):
    """The consumer publishes no X25519 ``use: enc`` key, so nothing can be encrypted to it."""


class DocumentInvalid(GatewayError):
    code = "document_invalid"
    title = "Invalid document"


class SignatureInvalid(DocumentInvalid):
    code = "signature_invalid"
    title = "Signature invalid"


class BrokerUnavailable(GatewayError):
    code = "broker_unavailable"
    title = "Broker unavailable"


class LedgerUnavailable(GatewayError):
    code = "ledger_unavailable"
    title = "Ledger unavailable"


class QuotaExceeded(GatewayError):
    """A quota refuses the request; ``retry_after`` says when trying again may succeed.

    Codes: ``too_many_streams`` (a concurrency quota), ``quota_exhausted`` (the day's volume),
    ``too_many_requests`` (a request rate, e.g. the token endpoint's).
    """

    code = "quota_exceeded"
    title = "Quota exceeded"

    def __init__(
        self,
        detail: str,
        *,
        code: str,
        retry_after: int,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after
        #: The ``RateLimit-Policy`` and ``RateLimit`` fields of the quota that refused.
        self.fields = fields or {}
