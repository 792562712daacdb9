"""The OpenAPI document as the gateway really answers, so that a generated client handles it.

Each route declares the problem responses it gives (``errors(...)``); here they become
``application/problem+json`` with the ``Problem`` schema. FastAPI's automatic ``422`` is
replaced by the ``400 invalid_parameter`` the gateway actually sends for a malformed parameter.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from gateway.adapters.http.problems import PROBLEM_JSON

_DESCRIPTIONS = {
    400: "A malformed parameter or cursor (`invalid_parameter`, `invalid_cursor`, …)",
    401: "A missing, invalid or expired access token (`invalid_token`, `token_expired`)",
    403: "The contract may not be used now (`contract_not_active`, with `reason`)",
    404: "No such contract, or another organisation's (`contract_not_found`); no such product, "
    "or another team's (`product_not_found`)",
    406: "A stream format other than SSE or NDJSON was asked for (`not_acceptable`)",
    413: "The request body is larger than the gateway accepts (`payload_too_large`)",
    415: "The body is neither `application/json` nor `application/x-ndjson` "
    "(`unsupported_media_type`)",
    422: "Records fail the product's schema (`records_invalid`, with `errors` per record; "
    "nothing was written, the invalid ones went to the dead-letter topic), or an "
    "`Idempotency-Key` was reused with other records (`idempotency_key_reused`)",
    409: "The cursor points past the end of a partition: the topic was recreated "
    "(`cursor_out_of_range`); start again without it. Publishing: a request with the same "
    "`Idempotency-Key` is still running (`idempotency_in_progress`)",
    429: "A quota refuses (`too_many_streams`, `quota_exhausted`, `too_many_requests`), with "
    "`Retry-After`",
    503: "Kafka or the ledger is unavailable (`broker_unavailable`, `product_unavailable`, "
    "`ledger_unavailable`), the process serves all the streams it may (`overloaded`), or "
    "the identity provider or Redis does not answer (`identity_provider_unavailable`, "
    "`store_unavailable`), with `Retry-After`",
}

#: What every authenticated partner route may answer besides success.
PARTNER_ERRORS = (400, 401, 403, 404, 429, 503)


class Problem(BaseModel):
    """RFC 9457 problem details with the gateway's stable ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    #: Why a contract is not active (``contract_not_active``).
    reason: str | None = None
    #: Seconds until trying again may succeed (quotas, unavailability).
    retry_after: int | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses answer problem details."""
    return {status: {"description": _DESCRIPTIONS[status]} for status in statuses}


def install(app: FastAPI) -> None:
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", {"description": _DESCRIPTIONS[400]})
                    for status, response in responses.items():
                        if status.startswith(("4", "5")):
                            response["content"] = problem
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            schemas["Problem"] = Problem.model_json_schema()
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
