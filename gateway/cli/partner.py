"""The partner side: ``gateway token``, ``gateway consume``; and ``gateway hash-secret``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.adapters.stores.signing import (
    org_of_key_file,
    private_signing_key,
    read_private_keys,
)
from gateway.cli.common import GatewayURL, InputError, KeyFile, reported
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.client import GatewayClient


def _client(gateway_url: str, key_path: Path, org: str | None) -> GatewayClient:
    from gateway.client import GatewayClient
    from gateway.errors import NoEncryptionKey
    from gateway.services.datakeys import encryption_key

    with reported():
        keys = read_private_keys(key_path)
        key = private_signing_key(keys, source=key_path)
    try:
        enc = encryption_key(keys, "you")
    except NoEncryptionKey:
        enc = None
    return GatewayClient(
        gateway_url,
        org=org or org_of_key_file(key_path),
        key=key,
        encryption_key=enc if enc is not None and enc.is_private else None,
    )


def _unreachable(gateway_url: str, exc: Exception, deadline: float | None = None) -> InputError:
    """The one line for a gateway that cannot be reached (refused, no such host, timeout)."""
    text = str(exc)
    why = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    after = f"; gave up after --deadline {deadline:g} s" if deadline is not None else ""
    return InputError(f"gateway unreachable at {gateway_url} ({why}){after}")


@click.command()
@click.option("--key", "key_path", required=True, type=KeyFile(), help="Your private JWKS.")
@click.option("--gateway", "gateway_url", required=True, type=GatewayURL())
@click.option("--org", default=None)
def token(key_path: Path, gateway_url: str, org: str | None) -> None:
    """Print an access token (client credentials with private_key_jwt)."""
    import httpx

    from gateway.client import GatewayClientError

    with _client(gateway_url, key_path, org) as client:
        try:
            click.echo(client.fetch_token())
        except GatewayClientError as exc:
            raise click.ClickException(str(exc)) from None
        except httpx.TransportError as exc:
            raise _unreachable(gateway_url, exc) from None


@click.command()
@click.option("--contract", "contract_id", required=True)
@click.option("--key", "key_path", required=True, type=KeyFile(), help="Your private JWKS.")
@click.option("--gateway", "gateway_url", required=True, type=GatewayURL())
@click.option("--org", default=None)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The cursor file (default: CONTRACT.cursor).",
)
@click.option("--from", "start", default=None, help="earliest | latest | RFC 3339 time")
@click.option(
    "--max-records", type=click.IntRange(min=1), default=None, help="Stop after this many."
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Give up (exit 2) once the gateway has been unreachable for this long in a row "
    "(connection errors, timeouts, 5xx answers; counted from the first failure since it last "
    "answered). Default: keep retrying, with backoff up to 30 s.",
)
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
@click.option(
    "--acknowledge/--no-acknowledge",
    default=True,
    show_default=True,
    help="Acknowledge the gateway's signed receipts once the sink holds their records.",
)
def consume(
    contract_id: str,
    key_path: Path,
    gateway_url: str,
    org: str | None,
    checkpoint: Path | None,
    start: str | None,
    max_records: int | None,
    deadline: float | None,
    out: Path | None,
    to_kafka: str | None,
    topic: str | None,
    checkpoint_every: int,
    acknowledge: bool,
) -> None:
    """Stream a contract's records, decrypted and verified, to stdout, a file or your Kafka.

    The checkpoint file keeps the cursor and advances only after the sink has the records.
    While the gateway cannot be reached it retries, saying so on stderr at each attempt.
    """
    import httpx

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
    checkpoint = checkpoint or Path(f"{contract_id}.cursor")
    if not checkpoint.absolute().parent.is_dir():
        raise click.BadParameter(
            f"{checkpoint}: the directory {checkpoint.parent} does not exist",
            param_hint="'--checkpoint'",
        )
    client = _client(gateway_url, key_path, org)
    interruptions = Interruptions()
    sink: Sink
    if to_kafka is not None and topic is not None:
        stop = lambda: interruptions.held  # noqa: E731 (Ctrl-C while the partner's Kafka is down)
        try:
            sink = KafkaSink({"bootstrap.servers": to_kafka}, topic, contract_id, stop_waiting=stop)
        except ModuleNotFoundError:
            client.close()
            raise InputError(
                "--to-kafka needs confluent-kafka: pip install 'exchange-gateway[kafka]'"
            ) from None
        except GatewayError as exc:  # a bootstrap address librdkafka refuses
            client.close()
            raise InputError(f"--to-kafka {to_kafka}: {exc.detail}") from None
    elif out is not None:
        try:
            sink = FileSink(out.open("a"))
        except OSError as exc:
            client.close()
            raise click.BadParameter(
                f"{out}: {exc.strerror or exc}", param_hint="'--out'"
            ) from None
    else:
        sink = FileSink(sys.stdout)
    restore = interruptions.install()  # Ctrl-C and SIGTERM stop between records, cleanly
    try:
        run(
            client,
            contract_id,
            checkpoint=checkpoint,
            sink=sink,
            start=start,
            max_records=max_records,
            checkpoint_every=checkpoint_every,
            interruptions=interruptions,
            give_up_after=deadline,
            acknowledge=acknowledge,
        )
    except httpx.TransportError as exc:  # only once --deadline has passed
        raise _unreachable(gateway_url, exc, deadline) from None
    except GatewayClientError as exc:
        if exc.status >= 500:  # only once --deadline has passed
            raise _unreachable(gateway_url, exc, deadline) from None
        raise click.ClickException(str(exc)) from None
    except (StreamEnded, FieldVerificationError, SinkError) as exc:
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
