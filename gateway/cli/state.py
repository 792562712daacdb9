"""``gateway state init``: the gateway's secrets, made once by an operator."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.adapters.stores.state_dir import SECRET_FILES, init_secrets
from gateway.cli.common import reported


@click.group()
def state() -> None:
    """The gateway's own secrets and state."""


@state.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def state_init(directory: Path) -> None:
    """Create the secrets every replica shares in DIRECTORY (mode 0600); never overwrite one.

    Then give every replica the same files, read-only, and point GATEWAY_SECRETS_DIR at them,
    e.g. `kubectl create secret generic exchange-gateway-secrets --from-file=DIRECTORY`.
    """
    with reported():
        made = init_secrets(directory)
    for name in SECRET_FILES:
        click.echo(f"{'created' if name in made else 'kept   '} {directory / name}")
