"""``gateway keys generate``, ``rotate``, ``fingerprint``."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.adapters.stores.contracts_dir import KEYS_SUFFIX
from gateway.adapters.stores.signing import fingerprints, generate_keys, rotate_keys
from gateway.cli.common import reported


def default_private_dir() -> Path:
    return Path(click.get_app_dir("exchange-gateway")) / "keys"


@click.group()
def keys() -> None:
    """Organisation keys (JWKS)."""


@keys.command("generate")
@click.argument("org")
@click.option(
    "--keys-dir", type=click.Path(path_type=Path), default=Path("keys"), show_default=True
)
@click.option("--private-dir", type=click.Path(path_type=Path), default=None)
@click.option("--force", is_flag=True, help="Replace an existing private key.")
def keys_generate(org: str, keys_dir: Path, private_dir: Path | None, force: bool) -> None:
    """Generate ORG's Ed25519 signing and X25519 encryption keys.

    The private JWKS is written with mode 0600 outside the repository (by default); the public
    JWKS goes to KEYS_DIR/ORG.jwks.json, ready to publish.
    """
    with reported():
        private_path = generate_keys(
            org, keys_dir, private_dir or default_private_dir(), force=force
        )
    click.echo(f"private keys: {private_path} (keep secret)")
    click.echo(f"public keys:  {keys_dir / (org + KEYS_SUFFIX)}")


@keys.command("rotate")
@click.argument("org")
@click.option(
    "--keys-dir", type=click.Path(path_type=Path), default=Path("keys"), show_default=True
)
@click.option("--private-dir", type=click.Path(path_type=Path), default=None)
def keys_rotate(org: str, keys_dir: Path, private_dir: Path | None) -> None:
    """A new signing key for ORG; the old ones stay published, so contracts they signed keep
    verifying (docs/onboarding.md)."""
    with reported():
        new, previous = rotate_keys(org, keys_dir, private_dir or default_private_dir())
    click.echo(f"new signing key:  {new} (signs from now on; confirm its fingerprint)")
    click.echo(f"previous key:     {previous} (kept: contracts it signed keep verifying)")
    click.echo(f"public keys:      {keys_dir / (org + KEYS_SUFFIX)} (send it to the provider)")


@keys.command("fingerprint")
@click.argument("file", type=click.Path(path_type=Path))
def keys_fingerprint(file: Path) -> None:
    """The RFC 7638 fingerprint of every key in a JWKS FILE, to confirm over a second channel."""
    with reported():
        lines = fingerprints(file)
    for line in lines:
        click.echo(line)
