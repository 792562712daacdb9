"""``gateway state``: the gateway's secrets, made once and rotated by an operator."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gateway.adapters.stores.keys import retire_kek
from gateway.adapters.stores.state_dir import (
    KEK_FILE,
    NOT_ROTATABLE,
    ROTATABLE,
    SECRET_FILES,
    Phase,
    init_secrets,
    rotate,
)
from gateway.cli.common import InputError, reported


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


@state.command("rotate")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("secret", metavar=f"{{{'|'.join([*ROTATABLE, *NOT_ROTATABLE])}}}")
@click.option(
    "--phase",
    required=True,
    metavar="add|promote|retire",
    help="add: a new key that only verifies; promote: it signs, the old one verifies; "
    "retire: the old one is dropped.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="kek --phase retire only: the state directory the replicas share (its data keys are "
    "re-sealed under the new KEK).",
)
def state_rotate(directory: Path, secret: str, phase: str, state_dir: Path | None) -> None:
    """Take SECRET in DIRECTORY (a copy of the replicas' secrets) one phase further; after each
    phase, update the replicas' secrets and restart them one by one (docs/operations.md)."""
    if phase not in tuple(Phase):  # checked here: one line, as every mistake (no usage text)
        raise InputError(f"--phase {phase!r}: one of add, promote, retire")
    step = Phase(phase)
    resealing = ROTATABLE.get(secret) == KEK_FILE and step is Phase.RETIRE
    if resealing and state_dir is None:
        raise InputError(
            "kek --phase retire re-seals the data keys: give --state STATE_DIR, the state "
            "directory the replicas share"
        )
    if not resealing and state_dir is not None:
        raise InputError("--state is only for kek --phase retire")
    with reported():
        if state_dir is not None:
            changes = retire_kek(directory, state_dir / "data-keys")
        else:
            changes = rotate(directory, secret, step, now=time.time())
    for change in changes:
        click.echo(change)
