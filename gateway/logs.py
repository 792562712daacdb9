"""The gateway's log: one JSON object a line (``python-json-logger``), or text for a terminal.

``GATEWAY_LOG_FORMAT`` is ``json``, ``text`` or ``auto`` (text when standard error is a
terminal, JSON otherwise: a container's log, a file). Every line carries the request it was
written for: ``request_id`` (the caller's ``X-Request-ID`` when it sent a sane one, else a new
one, and it is returned in the answer), ``contract`` (of ``/v1/contracts/{id}/…``) and ``org``
(once the caller is authenticated). They come from a context variable set by
``adapters/http/observe.py``'s middleware for the whole request, so that a stream's lines
carry them too.

What is logged never holds a token, a secret or a record's content: the code logs ids and
reasons only, and ``tests/test_logs.py`` drives the flows that handle them and looks.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

#: The request a line is written for: ``request_id``, ``contract``, ``org`` (a dict the
#: request's middleware owns, so that code deeper down may add to it).
CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")
CONTEXT_FIELDS = ("request_id", "contract", "org")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CONTRACT_PATH = re.compile(r"^/v1/contracts/([^/]+)")


class ContextFilter(logging.Filter):
    """Puts the request's context on every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = CONTEXT.get({})
        for name in CONTEXT_FIELDS:
            setattr(record, name, context.get(name, "-"))
        return True


def note(**values: str) -> None:
    """Add to the current request's context (e.g. ``org`` once the caller is known)."""
    context = CONTEXT.get(None)
    if context is not None:
        context.update(values)


def handler(log_format: str, stream: IO[str]) -> logging.Handler:
    """A handler writing ``log_format`` (``json`` or ``text``) to ``stream``, with the
    request's context on every line."""
    written = logging.StreamHandler(stream)
    written.addFilter(ContextFilter())
    if log_format == "json":
        written.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s "
                + " ".join(f"%({name})s" for name in CONTEXT_FIELDS),
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
                # uvicorn's copy of its message with terminal colours: noise in a JSON line.
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            )
        )
    else:
        written.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s "
                "[%(request_id)s %(org)s %(contract)s]"
            )
        )
    return written


def configure(log_format: str = "auto", level: int = logging.INFO) -> None:
    """The root logger's one handler, on standard error, in ``log_format`` (``auto``: text on
    a terminal, JSON otherwise)."""
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(log_format, sys.stderr))
    root.setLevel(level)


def request_context(scope: Any) -> dict[str, str]:
    """The log context of an HTTP request (an ASGI scope): its id, the caller's
    ``X-Request-ID`` when sane, else a new one; and the contract its path names."""
    given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
    context = {"request_id": given if _SANE_ID.match(given) else uuid.uuid4().hex}
    if found := _CONTRACT_PATH.match(scope.get("path", "")):
        context["contract"] = found.group(1)[:200]
    return context
