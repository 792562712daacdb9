"""RFC 9457 problem details: the only place that knows HTTP status codes for domain errors.

Every error body is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and a stable ``code``. Nothing internal (traces, exception text of libraries) leaks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    ContractNotActive,
    ContractNotFound,
    CursorOutOfRange,
    GatewayError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdentityProviderUnavailable,
    InvalidRequest,
    LedgerUnavailable,
    OrganisationNotFound,
    Overloaded,
    PayloadTooLarge,
    ProductNotFound,
    QuotaExceeded,
    RecordsInvalid,
    SignatureRefused,
    StoreUnavailable,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[GatewayError], int]] = [
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InvalidRequest, 400),
    (RecordsInvalid, 422),
    (IdempotencyKeyReused, 422),
    (IdempotencyInProgress, 409),
    (AuthenticationFailed, 401),
    (ContractNotActive, 403),
    (ContractNotFound, 404),
    (ProductNotFound, 404),
    (OrganisationNotFound, 404),
    (SignatureRefused, 422),
    (CursorOutOfRange, 409),
    (QuotaExceeded, 429),
    (BrokerUnavailable, 503),
    (LedgerUnavailable, 503),
    (Overloaded, 503),
    (IdentityProviderUnavailable, 503),
    (StoreUnavailable, 503),
]


#: Answered 503 with ``Retry-After``: try again soon.
_UNAVAILABLE = (
    BrokerUnavailable,
    LedgerUnavailable,
    Overloaded,
    IdentityProviderUnavailable,
    StoreUnavailable,
)


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    import orjson

    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def status_of(error: GatewayError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def gateway_error_response(error: GatewayError, /, **members: Any) -> Response:
    """The problem response for ``error``; ``members`` are added to its body."""
    status = status_of(error)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = dict(members)
    if isinstance(error, AuthenticationFailed):
        bearer = f'Bearer error="invalid_token", error_description="{error.detail}"'
        headers["WWW-Authenticate"] = error.challenge or bearer
    if isinstance(error, ContractNotActive):
        extra["reason"] = error.reason
    if isinstance(error, RecordsInvalid):
        extra["errors"] = error.errors
        extra["dead_letter_topic"] = error.dead_letter_topic
    if isinstance(error, IdempotencyInProgress):
        headers["Retry-After"] = "1"
    if isinstance(
        error,
        BrokerUnavailable
        | LedgerUnavailable
        | Overloaded
        | IdentityProviderUnavailable
        | StoreUnavailable,
    ):
        headers["Retry-After"] = "5"
    if isinstance(error, QuotaExceeded):
        headers["Retry-After"] = str(error.retry_after)
        headers.update(error.fields)
        extra["retry_after"] = error.retry_after
    return problem(status, error.code, error.title, error.detail, headers=headers, **extra)


def install(app: FastAPI) -> None:
    async def on_gateway_error(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, GatewayError):  # registered for this type only
            raise exc
        return gateway_error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):  # registered for this type only
            raise exc
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "header"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return problem(400, "invalid_parameter", "Invalid request parameter", "; ".join(parts))

    async def on_http_error(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # registered for this type only
            raise exc
        codes = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail), headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return problem(500, "internal_error", "Internal error", "The gateway failed unexpectedly.")

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
