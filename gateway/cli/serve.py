"""``gateway serve`` and ``gateway demo``."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.common import InputError, reported

if TYPE_CHECKING:
    from pydantic import ValidationError

    from gateway.settings import Settings


def settings_error(exc: ValidationError) -> str:
    """Every reason the settings are refused, on one line: where and why, never the value
    (pydantic's own message shows the input, secrets included)."""
    from gateway.core.contracts import describe_validation_error

    return describe_validation_error(exc, whole=None)


def load_settings(**overrides: Any) -> Settings:
    """The settings, or one ``Error:`` line and exit 2 (environment variables are
    ``GATEWAY_`` and the path in upper case, nested with ``__``: ``kafka.sasl_mechanism`` is
    ``GATEWAY_KAFKA__SASL_MECHANISM``)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from gateway.settings import Settings  # the server's settings: not in the partner SDK

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise InputError(f"invalid settings: {settings_error(exc)}") from None
    except SettingsError as exc:  # a variable that does not parse (names it, not its value)
        raise InputError(f"invalid settings: {exc}") from None


def configure_logging(log_format: str) -> None:
    from gateway.logs import configure  # the server's log: not in the partner SDK

    configure(log_format, logging.INFO)


@click.command()
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path))
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path))
@click.option("--state", "state_dir", type=click.Path(path_type=Path))
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path))
@click.option("--bootstrap-servers")
@click.option("--host")
@click.option("--port", type=int)
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path))
@click.option("--org")
@click.option("--public-url")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the port (they share quotas through Redis, like replicas).",
)
def serve(bootstrap_servers: str | None, workers: int, **options: Any) -> None:
    """Serve the partner API. Every option is also a GATEWAY_ setting."""
    overrides = {k: v for k, v in options.items() if v is not None}
    settings = load_settings(**overrides)
    configure_logging(settings.log_format)
    if bootstrap_servers:
        settings.kafka.bootstrap_servers = bootstrap_servers
    if not settings.kafka.bootstrap_servers:
        raise click.ClickException(
            "no Kafka configured: pass --bootstrap-servers or set GATEWAY_KAFKA__BOOTSTRAP_SERVERS"
            " (`gateway demo` starts an embedded broker)"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.ClickException("--tls-cert and --tls-key go together")
    if workers > 1:
        if settings.redis.url is None:
            raise InputError(
                "--workers shares quotas and replay protection through Redis, as replicas do: "
                "set GATEWAY_REDIS__URL"
            )
        from gateway.server import run_workers

        arguments = [
            f"--{k.replace('_dir', '').replace('_', '-')}={v}" for k, v in overrides.items()
        ]
        arguments.append(f"--bootstrap-servers={settings.kafka.bootstrap_servers}")
        raise SystemExit(run_workers(settings, workers, arguments))
    from gateway.bootstrap import build_gateway
    from gateway.server import run_server

    # What stops the start (secrets, state, the ledger topic) is one line; a failure while
    # serving keeps its traceback.
    with reported():
        gateway = build_gateway(settings)
    run_server(settings, gateway)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be listened on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@click.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".demo"), show_default=True
)
def demo(port: int, workdir: Path) -> None:
    """Embedded broker, demo keys and signed contracts, an order producer, and the gateway."""
    from gateway.demo import run_demo

    if not port_free(port):
        raise InputError(f"port {port} is in use: choose another with --port N (make demo PORT=N)")

    # A terminal's demo: text, unless GATEWAY_LOG_FORMAT says otherwise.
    configure_logging(os.environ.get("GATEWAY_LOG_FORMAT", "text"))
    run_demo(port=port, workdir=workdir)
