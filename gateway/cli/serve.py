"""``gateway serve`` and ``gateway demo``."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import InputError, reported


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
    from gateway.settings import Settings  # the server's settings: not in the partner SDK

    overrides = {k: v for k, v in options.items() if v is not None}
    settings = Settings(**overrides)
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
    from gateway.server import run_server

    with reported():  # secrets or state that cannot be used: one line, exit 2
        run_server(settings)


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
