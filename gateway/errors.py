"""The gateway's errors: one root, each with a stable machine-readable ``code``.

Only ``adapters/http`` turns these into status codes (RFC 9457 problem details); the rest of
the code raises them by what went wrong in the domain. The hierarchy::

    GatewayError
    ├── InvalidRequest                 a parameter the caller sent is malformed
    │   ├── InvalidCursor              an edited cursor, or one of another contract
    │   ├── PayloadTooLarge            a request body over the size limit
    │   └── UnsupportedMediaType       a request body of a type the endpoint does not read
    ├── RecordsInvalid                 published records that fail the product's schema
    ├── IdempotencyKeyReused           an Idempotency-Key sent again with other records
    ├── IdempotencyInProgress          a request with the same Idempotency-Key is running
    ├── AuthenticationFailed           missing, invalid or expired access token
    │   └── LegalAuthenticationFailed  the legal pages' HTTP Basic login is missing or wrong
    ├── CursorOutOfRange               a cursor points past a partition's end (recreated topic)
    ├── ContractNotFound               unknown contract, or another organisation's (same answer)
    ├── ProductNotFound                unknown product, or another team's (same answer)
    ├── ContractNotActive              the caller's contract exists but may not be used now
    │   └── NoEncryptionKey            the consumer publishes no key to encrypt its fields to
    ├── DocumentInvalid                a product, contract or key document is malformed
    │   ├── SignatureInvalid           a signature does not verify
    │   ├── FilterSyntaxError          a contract's row filter does not parse
    │   └── StateInvalid               the gateway's secrets or state cannot be used as asked
    ├── DocumentExists                 a key or document file would be overwritten
    ├── QuotaExceeded                  a concurrency, daily-volume or request-rate quota refuses
    ├── BrokerUnavailable              Kafka cannot be reached or the product's topic is missing
    ├── Overloaded                     this process serves as many streams as it may
    ├── IdentityProviderUnavailable    internal callers' tokens cannot be checked now
    ├── StoreUnavailable               shared state (Redis) needed for the request does not answer
    └── LedgerUnavailable              deliveries cannot be recorded, so none may start

Messages never contain secrets, tokens or record contents. Every ``code`` a caller can see is
in ``CODES``; partners code against them, so codes are added, never renamed or removed.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = [
    "CODES",
    "AuthenticationFailed",
    "BrokerUnavailable",
    "ContractNotActive",
    "ContractNotFound",
    "CursorOutOfRange",
    "DocumentExists",
    "DocumentInvalid",
    "FilterSyntaxError",
    "GatewayError",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "IdentityProviderUnavailable",
    "InvalidCursor",
    "InvalidRequest",
    "LedgerUnavailable",
    "LegalAuthenticationFailed",
    "NoEncryptionKey",
    "OrganisationNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ProductNotFound",
    "QuotaExceeded",
    "RecordsInvalid",
    "SignatureInvalid",
    "SignatureRefused",
    "StateInvalid",
    "StoreUnavailable",
    "UnsupportedMediaType",
]

#: Every stable ``code`` of a problem response or CLI error, and what it means.
CODES: Final = MappingProxyType(
    {
        # 400
        "invalid_parameter": "a request parameter is malformed",
        "invalid_cursor": "a cursor was edited, or belongs to another contract",
        "unknown_key": "no data key with that kid for this contract",
        # 413, 422 and 409 of the publishing API
        "payload_too_large": "the request body is larger than the gateway accepts",
        "unsupported_media_type": "the request body's Content-Type is not one the endpoint reads",
        "records_invalid": "published records fail the product's schema (see errors)",
        "idempotency_key_reused": "the Idempotency-Key was used before with other records",
        "idempotency_in_progress": "a request with this Idempotency-Key is still running",
        # the token endpoint (RFC 6749 §5.2 errors, also the problem's code)
        "invalid_client": "client authentication failed",
        "invalid_request": "the token request is malformed",
        "unsupported_grant_type": "only client_credentials is supported",
        "unauthorized_client": "the client may not use this grant",
        "invalid_scope": "the requested scope is not available",
        # 401
        "invalid_token": "the access token is missing or invalid",
        "token_expired": "the access token has expired",
        "legal_login_required": "the legal pages need a legal user's HTTP Basic login",
        # 403
        "contract_not_active": "the contract exists but may not be used now (see reason)",
        # 422: a countersignature posted over the API that is refused
        "signature_refused": "a countersignature is refused (see code)",
        "wrong_organisation": "the signature names another organisation than the caller",
        "not_offered": "that version is not an offer awaiting the caller's signature",
        "offer_expired": "the offer's validity has ended: it can no longer be signed",
        "receipt_invalid": "an acknowledged receipt is not one the gateway signed for this "
        "contract",
        # 409
        "cursor_out_of_range": "the cursor points past the end of a partition (recreated topic)",
        # 404 and other HTTP-level answers
        "contract_not_found": "no such contract, or another organisation's",
        "product_not_found": "no such product, or one the caller's teams do not own",
        "organisation_not_found": "no such organisation, or one whose keys the caller may not see",
        "not_found": "no such path",
        "method_not_allowed": "the path does not take that method",
        "not_acceptable": "a stream format other than SSE or NDJSON was asked for",
        # 429
        "quota_exceeded": "a quota refuses the request",
        "too_many_streams": "a concurrency quota is full",
        "quota_exhausted": "the contract's daily volume is used up",
        "too_many_requests": "a request rate (the token endpoint's) is exceeded",
        # 503
        "broker_unavailable": "Kafka cannot be reached",
        "product_unavailable": "the product's topic is not available in Kafka",
        "schema_registry_unavailable": "the Schema Registry cannot be reached to decode records",
        "ledger_unavailable": "deliveries cannot be recorded, so none may start",
        "overloaded": "this gateway process serves as many streams as it may; try again",
        "identity_provider_unavailable": "the identity provider cannot be reached; try again",
        "store_unavailable": "shared state (Redis) the request needs does not answer; try again",
        # documents (CLI and the contract's refusal reason)
        "document_invalid": "a product, contract, statement or key document is malformed",
        "document_exists": "a key or document file would be overwritten",
        "signature_invalid": "a signature does not verify",
        "signature_missing": "a party has not signed",
        "invalid_filter": "a contract's row filter does not parse",
        # 500
        "gateway_error": "an error without a more specific code",
        "internal_error": "the gateway failed unexpectedly",
    }
)


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: str = "gateway_error"
    title: str = "Gateway error"

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if cls.code not in CODES:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not in errors.CODES")

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


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"
    title = "Unsupported media type"


class RecordsInvalid(GatewayError):
    """Records of a publish request fail the product's schema; ``errors`` names each (record
    index, JSON Pointer, rule, why), never a value. Nothing of the request was written to the
    product's topic; the failing records went to its dead-letter topic."""

    code = "records_invalid"
    title = "Records invalid"

    def __init__(self, detail: str, *, errors: list[dict[str, object]], dead_letter_topic: str):
        super().__init__(detail)
        self.errors = errors
        self.dead_letter_topic = dead_letter_topic


class IdempotencyKeyReused(GatewayError):
    code = "idempotency_key_reused"
    title = "Idempotency key reused"


class IdempotencyInProgress(GatewayError):
    code = "idempotency_in_progress"
    title = "Request in progress"


class CursorOutOfRange(GatewayError):
    """A well-formed cursor whose position the topic no longer has: past a partition's end (the
    topic was deleted and created again), or, mid-stream, a position the broker has lost.
    Reading on from the end would skip whatever is produced up to the cursor's offsets."""

    code = "cursor_out_of_range"
    title = "Cursor out of range"


class AuthenticationFailed(GatewayError):
    code = "invalid_token"
    title = "Authentication failed"
    #: The ``WWW-Authenticate`` challenge; ``None`` means a Bearer challenge (RFC 6750).
    challenge: str | None = None


class LegalAuthenticationFailed(AuthenticationFailed):
    code = "legal_login_required"
    challenge = 'Basic realm="legal", charset="UTF-8"'


class ContractNotFound(GatewayError):
    code = "contract_not_found"
    title = "Contract not found"


class OrganisationNotFound(GatewayError):
    code = "organisation_not_found"
    title = "Organisation not found"


class SignatureRefused(GatewayError):
    """A countersignature or an acknowledgement posted over the API is refused:
    ``signature_invalid``, ``wrong_organisation``, ``not_offered``, ``offer_expired``,
    ``receipt_invalid``."""

    code = "signature_refused"
    title = "Signature refused"


class ProductNotFound(GatewayError):
    code = "product_not_found"
    title = "Product not found"


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


class FilterSyntaxError(DocumentInvalid):
    code = "invalid_filter"


class StateInvalid(DocumentInvalid):
    """The gateway's secrets or state directory cannot be used: a missing secret, a state
    directory it cannot write, a rotation out of order. The command stops (exit 2)."""


class DocumentExists(GatewayError):
    """Writing a key or document file would replace one that exists (without ``force``)."""

    code = "document_exists"
    title = "Document exists"


class BrokerUnavailable(GatewayError):
    code = "broker_unavailable"
    title = "Broker unavailable"


class Overloaded(GatewayError):
    """The process has ``reading.max_streams`` streams and pulls open (503 with Retry-After)."""

    code = "overloaded"
    title = "Overloaded"


class IdentityProviderUnavailable(GatewayError):
    """The OIDC provider's keys cannot be fetched and none are cached (503 with Retry-After)."""

    code = "identity_provider_unavailable"
    title = "Identity provider unavailable"


class StoreUnavailable(GatewayError):
    code = "store_unavailable"
    title = "State store unavailable"


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
