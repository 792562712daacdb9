"""The authorization server endpoints: token (RFC 6749 §3.2), JWKS, metadata (RFC 8414)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.adapters.http.deps import GatewayDep
from gateway.adapters.http.openapi import errors
from gateway.adapters.http.problems import gateway_error_response, problem
from gateway.errors import LedgerUnavailable, QuotaExceeded
from gateway.services.authorization import TokenRequest, presented_client

router = APIRouter(tags=["oauth"])

MAX_FORM_BYTES = 16_384
_ERROR_TITLES = {
    "invalid_client": "Client authentication failed",
    "invalid_request": "Invalid token request",
    "unsupported_grant_type": "Unsupported grant type",
    "unauthorized_client": "Client not authorised for this grant",
    "invalid_scope": "Invalid scope",
}


def _token_problem(status: int, error: str, description: str, headers: dict[str, str]) -> Response:
    # RFC 9457 body that is also an RFC 6749 §5.2 error response (``error`` members), so
    # standard OAuth client libraries read it as they would any token error.
    return problem(
        status,
        error,
        _ERROR_TITLES.get(error, "Token request refused"),
        description,
        headers=headers,
        error=error,
        error_description=description,
    )


@router.post(
    "/oauth/token",
    responses={
        200: {"description": "An RFC 9068 access token (RFC 6749 §5.1)"},
        **errors(400, 401, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        # RFC 6749 §3.2: other parameters are ignored, none may repeat.
                        "additionalProperties": False,
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_assertion_type": {"type": "string"},
                            "client_assertion": {"type": "string"},
                            "client_id": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request, gateway: GatewayDep) -> Response:
    answer = await _token(request, gateway)
    gateway.metrics.token_requests.labels(_outcome(answer)).inc()
    return answer


#: The refusals' reasons: RFC 6749 §5.2's errors, and for its ``temporarily_unavailable`` the
#: gateway's code saying why (the token rate limit, or the ledger).
_REASONS = frozenset({*_ERROR_TITLES, "invalid_grant", "too_many_requests", LedgerUnavailable.code})


def _outcome(answer: Response) -> str:
    """``issued``, or why a token request was refused (a bounded label)."""
    if answer.status_code == 200:
        return "issued"
    try:
        body = orjson.loads(answer.body)
        reason = body.get("code") if body.get("error") == "temporarily_unavailable" else None
        reason = reason or body.get("error")
    except (orjson.JSONDecodeError, AttributeError):
        reason = None
    return reason if reason in _REASONS else "other"


async def _token(request: Request, gateway: GatewayDep) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return _token_problem(
            400, "invalid_request", "send an application/x-www-form-urlencoded body", {}
        )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return _token_problem(400, "invalid_request", "the body is not UTF-8", {})
    form = dict(pairs)
    if len(form) != len(pairs):
        return _token_problem(400, "invalid_request", "a parameter is given more than once", {})
    server = gateway.authorization
    token_request = TokenRequest(server.token_endpoint, form, request.headers.get("authorization"))
    # Brute-force protection: per client it authenticates as, and per source address (so that
    # varying the names a request gives does not escape it). Refused requests count too.
    presented = presented_client(token_request)
    address = request.client.host if request.client else "unknown"
    try:
        if presented.client_id is not None:
            await gateway.quotas.admit_token(f"client:{presented.client_id}")
        await gateway.quotas.admit_token(f"addr:{address}", per_address=True)
    except QuotaExceeded as exc:  # with RFC 6749 members, so OAuth libraries read it too
        return gateway_error_response(
            exc, error="temporarily_unavailable", error_description=exc.detail
        )
    if presented.conflict is not None:
        error, description = presented.conflict
        return _token_problem(400 if error == "invalid_request" else 401, error, description, {})
    # Issuing a token is recorded like every delivery: fail closed while it cannot be.
    if gateway.ledger.problem() is not None:  # (the reason is for operators: /readyz, logs)
        return gateway_error_response(
            LedgerUnavailable("tokens cannot be recorded now; try again shortly"),
            error="temporarily_unavailable",
            error_description="the gateway cannot record token issuance now",
        )
    # In a worker thread: Argon2 and the shared replay cache block.
    status, payload, headers = await anyio.to_thread.run_sync(
        server.create_token_response, token_request
    )
    header_map = {k: v for k, v in headers if k.lower() != "content-type"}
    if status >= 400:
        payload = payload if isinstance(payload, dict) else {}
        error = str(payload.get("error", "invalid_request"))
        description = str(payload.get("error_description", "the token request was refused"))
        return _token_problem(status, error, description, header_map)
    return Response(orjson.dumps(payload), status, header_map, media_type="application/json")


@router.get("/.well-known/jwks.json")
def jwks(gateway: GatewayDep) -> dict[str, Any]:
    """The keys of access tokens (ES256) and of the ledger's signed checkpoints (EdDSA)."""
    published = gateway.authorization.public_jwks()
    return {**published, "keys": [*published["keys"], *gateway.ledger_public_jwks]}


@router.get("/.well-known/oauth-authorization-server")
def metadata(gateway: GatewayDep) -> dict[str, Any]:
    return gateway.authorization.metadata()
