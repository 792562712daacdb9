"""What the command modules share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from gateway.errors import GatewayError


@contextmanager
def reported() -> Iterator[None]:
    """A ``GatewayError`` becomes the command's error message (exit 1), not a traceback."""
    try:
        yield
    except GatewayError as exc:
        raise click.ClickException(exc.detail) from None
