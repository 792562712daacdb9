"""The partner side: ``gateway token``, ``gateway consume``; and ``gateway hash-secret``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.adapters.stores.signing import org_of_key_file, read_signing_key
from gateway.cli.common import reported
from gateway.core.jose import parse_private_jwks

if TYPE_CHECKING:
    from gateway.client import GatewayClient


def _client(gateway_url: str, key_path: Path, org: str | None) -> GatewayClient:
    from gateway.client import GatewayClient
    from gateway.errors import NoEncryptionKey
    from gateway.services.datakeys import encryption_key

    keys = parse_private_jwks(json.loads(key_path.read_text()), source=str(key_path))
    try:
        enc = encryption_key(keys, "you")
    except NoEncryptionKey:
        enc = None
    with reported():
        key = read_signing_key(key_path)
    return GatewayClient(
        gateway_url,
        org=org or org_of_key_file(key_path),
        key=key,
        encryption_key=enc,
    )


@click.command()
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--gateway", "gateway_url", required=True)
@click.option("--org", default=None)
def token(key_path: Path, gateway_url: str, org: str | None) -> None:
    """Print an access token (client credentials with private_key_jwt)."""
    from gateway.client import GatewayClientError

    try:
        click.echo(_client(gateway_url, key_path, org).fetch_token())
    except GatewayClientError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--contract", "contract_id", required=True)
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--gateway", "gateway_url", required=True)
@click.option("--org", default=None)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None)
@click.option("--from", "start", default=None, help="earliest | latest | RFC 3339 time")
@click.option("--max-records", type=int, default=None)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append NDJSON to this file (fsynced before each checkpoint).",
)
@click.option(
    "--to-kafka",
    "to_kafka",
    default=None,
    metavar="BOOTSTRAP",
    help="Produce into your own Kafka cluster instead (with --topic).",
)
@click.option("--topic", default=None)
@click.option(
    "--checkpoint-every",
    type=int,
    default=1000,
    show_default=True,
    help="Records between checkpoints (the most a crash can repeat).",
)
def consume(
    contract_id: str,
    key_path: Path,
    gateway_url: str,
    org: str | None,
    checkpoint: Path | None,
    start: str | None,
    max_records: int | None,
    out: Path | None,
    to_kafka: str | None,
    topic: str | None,
    checkpoint_every: int,
) -> None:
    """Stream a contract's records, decrypted and verified, to stdout, a file or your Kafka.

    The checkpoint file keeps the cursor and advances only after the sink has the records.
    """
    from gateway.client import (
        FileSink,
        GatewayClientError,
        Interruptions,
        KafkaSink,
        Sink,
        SinkError,
        StreamEnded,
    )
    from gateway.client import consume as run
    from gateway.fieldcrypto import FieldVerificationError

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if (to_kafka is None) != (topic is None):
        raise click.UsageError("--to-kafka and --topic go together")
    sink: Sink
    if to_kafka is not None and topic is not None:
        sink = KafkaSink({"bootstrap.servers": to_kafka}, topic, contract_id)
    else:
        sink = FileSink(out.open("a") if out else sys.stdout)
    client = _client(gateway_url, key_path, org)
    interruptions = Interruptions()
    restore = interruptions.install()  # Ctrl-C and SIGTERM stop between records, cleanly
    try:
        run(
            client,
            contract_id,
            checkpoint=checkpoint or Path(f"{contract_id}.cursor"),
            sink=sink,
            start=start,
            max_records=max_records,
            checkpoint_every=checkpoint_every,
            interruptions=interruptions,
        )
    except (GatewayClientError, StreamEnded, FieldVerificationError, SinkError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        restore()
        client.close()


@click.command("hash-secret")
def hash_secret() -> None:
    """Read a client secret from stdin and print its Argon2 hash for GATEWAY_CLIENTS."""
    from gateway.services.passwords import hash_secret

    click.echo(hash_secret(sys.stdin.readline().rstrip("\n")))
