"""``gateway ledger``: verify, export, report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.cli.common import InputError, reported

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def ledger() -> None:
    """The ledger of contracts, tokens and deliveries (a Kafka topic)."""


def ledger_entries(
    bootstrap_servers: str | None, topic: str | None, file: Path | None
) -> list[dict[str, Any]]:
    """Entries from an exported NDJSON file, or from the ledger topic."""
    if file is not None:
        try:
            return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise InputError(f"{file}: not an exported ledger (NDJSON): {exc}") from None
    from gateway.adapters.kafka.ledger import read_entries
    from gateway.cli.serve import load_settings  # one line for settings it refuses

    settings = load_settings()
    if bootstrap_servers:
        settings.kafka.bootstrap_servers = bootstrap_servers
    if not settings.kafka.bootstrap_servers:
        raise click.ClickException(
            "pass --bootstrap-servers or set GATEWAY_KAFKA__BOOTSTRAP_SERVERS"
        )
    with reported():  # Kafka cannot be reached: one line
        return list(
            read_entries(settings.kafka.librdkafka_config(), topic or settings.ledger_topic)
        )


_ledger_options = [
    click.option("--bootstrap-servers", default=None),
    click.option("--topic", default=None, help="The ledger topic (default: GATEWAY_LEDGER_TOPIC)."),
    click.option(
        "--file",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="Read an exported NDJSON file instead of the topic.",
    ),
]


def ledger_options(command: F) -> F:
    for option in reversed(_ledger_options):
        command = option(command)
    return command


@ledger.command("verify")
@click.option(
    "--keys",
    "keys_source",
    default=None,
    help="The gateway's JWKS (a file, or its URL: https://…/.well-known/jwks.json) to verify "
    "the signed checkpoints with.",
)
@click.option(
    "--live-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="A chain whose latest signed checkpoint is this recent is live (its replica runs).",
)
@click.option(
    "--anchored",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoints kept outside the ledger (one a line: the JWS, or the JSON an HTTP anchor "
    "received); each must still be in the ledger as signed.",
)
@ledger_options
def ledger_verify(
    keys_source: str | None,
    live_seconds: float,
    anchored: Path | None,
    bootstrap_servers: str | None,
    topic: str | None,
    file: Path | None,
) -> None:
    """Check every chain: edited, removed or reordered entries, and what the signed
    checkpoints prove (a rewritten chain, a cut tail); exit 1 on any problem."""
    from datetime import UTC

    from gateway.core.jose import compact_payload, verify_compact
    from gateway.core.ledger import prove, verify

    keys = _jwks(keys_source) if keys_source else None
    entries = ledger_entries(bootstrap_servers, topic, file)
    read = (lambda token: verify_compact(token, keys)) if keys is not None else compact_payload
    problems = verify(entries)
    tokens = _anchored(anchored) if anchored is not None else []
    proved, proofs = prove(
        entries, read, now=datetime.now(UTC), live_seconds=live_seconds, anchored=tokens
    )
    problems += proved
    for p in problems:
        where = f" seq {p.seq}" + (f" (entry {p.position})" if p.position >= 0 else "")
        click.echo(f"{p.kind.upper()} chain {p.chain}{where}: {p.detail}")
    closed = sum(1 for proof in proofs if proof.closed)
    verdict = "intact" if keys is not None else "intact as far as the links go"
    click.echo(
        f"{len(entries)} entries in {len(proofs)} chains ({closed} closed, "
        f"{len(proofs) - closed} not closed): "
        + (verdict if not problems else f"{len(problems)} problems")
    )
    if keys is None:
        click.echo(
            "checkpoint signatures NOT verified (anyone able to write the topic could have "
            "made them): pass --keys with the gateway's JWKS"
        )
    sys.exit(1 if problems else 0)


def _anchored(path: Path) -> list[str]:
    """The checkpoints in an anchor's file: a JWS a line, or ``{"checkpoint": "<JWS>"}``."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return [str(json.loads(x)["checkpoint"]) if x.startswith("{") else x for x in lines]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a file of anchored checkpoints ({exc})") from None


def _jwks(source: str) -> Any:
    """A JWKS from a file or a URL; one clear line when it cannot be had."""
    from joserfc.jwk import KeySet

    try:
        if source.startswith(("https://", "http://")):
            import httpx

            text = httpx.get(source, timeout=10).raise_for_status().text
        else:
            text = Path(source).read_text()
        return KeySet.import_key_set(json.loads(text))
    except Exception as exc:  # any failure to get keys is the same message: exit 2
        raise InputError(f"{source}: not a JWKS that can be read ({exc})") from None


@ledger.command("export")
@ledger_options
def ledger_export(bootstrap_servers: str | None, topic: str | None, file: Path | None) -> None:
    """Print the ledger as NDJSON (for archiving, or `verify --file`)."""
    for entry in ledger_entries(bootstrap_servers, topic, file):
        click.echo(json.dumps(entry, separators=(",", ":")))


@ledger.command("report")
@click.option("--contract", "contract_id", required=True)
@click.option("--from", "since", default=None, help="RFC 3339 time")
@click.option("--to", "until", default=None, help="RFC 3339 time")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@ledger_options
def ledger_report(
    contract_id: str,
    since: str | None,
    until: str | None,
    as_json: bool,
    bootstrap_servers: str | None,
    topic: str | None,
    file: Path | None,
) -> None:
    """What the partner received under a contract, when, and under which versions."""
    from gateway.services.report import build_report, render_table

    entries = ledger_entries(bootstrap_servers, topic, file)
    report = build_report(entries, contract_id, since=_moment(since), until=_moment(until))
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else render_table(report))


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise click.BadParameter(
            f"{text!r} is not an RFC 3339 time with a UTC offset (e.g. 2026-11-21T00:00:00Z)"
        )
    return moment


@ledger.command("evidence")
@click.option("--contract", "contract_id", required=True)
@click.option("--from", "since", required=True, help="RFC 3339 time")
@click.option("--to", "until", required=True, help="RFC 3339 time")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option(
    "--keys", "keys_source", required=True,
    help="The gateway's JWKS (a file, or https://…/.well-known/jwks.json): it signed the "
    "checkpoints.",
)  # fmt: skip
@click.option("--contracts-dir", type=click.Path(path_type=Path), default=Path("contracts"))
@click.option("--keys-dir", type=click.Path(path_type=Path), default=Path("keys"))
@ledger_options
def ledger_evidence(
    contract_id: str,
    since: str,
    until: str,
    out: Path,
    keys_source: str,
    contracts_dir: Path,
    keys_dir: Path,
    bootstrap_servers: str | None,
    topic: str | None,
    file: Path | None,
) -> None:
    """A self-contained bundle answering: what did the partner receive under the contract
    between FROM and TO, under which terms? Check it offline with `verify-evidence`."""
    from datetime import UTC

    from gateway.adapters.stores.contracts_dir import load_registry
    from gateway.core.archive import ContractArchive
    from gateway.core.jose import public_jwks
    from gateway.errors import DocumentInvalid
    from gateway.services.evidence import bundle_from, verify_bundle

    start, end = _moment(since), _moment(until)
    if start is None or end is None:  # pragma: no cover - both options are required
        raise InputError("--from and --to are required")
    gateway_keys = _jwks(keys_source)
    entries = ledger_entries(bootstrap_servers, topic, file)
    archive = ContractArchive().learn_all(entries)
    now = datetime.now(UTC)
    registry = load_registry(contracts_dir, keys_dir, gateway_org=None, now=now, archive=archive)
    try:
        bundle = bundle_from(
            entries,
            registry,
            archive,
            contract=contract_id,
            since=start,
            until=end,
            gateway_keys=public_jwks(gateway_keys),
            now=now,
        )
    except DocumentInvalid as exc:
        raise InputError(exc.detail) from None
    out.write_text(json.dumps(bundle, indent=1) + "\n")
    for problem in verify_bundle(bundle, gateway_keys)[0]:  # e.g. no checkpoint yet
        click.echo(f"warning: {problem} (a live chain is signed every few seconds: try again)")
    report = bundle["report"]
    click.echo(
        f"{out}: {len(report['deliveries'])} deliveries under {len(bundle['versions'])} "
        f"versions, {len(bundle['ledger'])} ledger entries"
    )


@ledger.command("verify-evidence")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--keys", "keys_source", default=None,
    help="The gateway's JWKS as you know it (else the bundle's own, whose thumbprints are shown).",
)  # fmt: skip
def ledger_verify_evidence(bundle: Path, keys_source: str | None) -> None:
    """Check an evidence bundle offline: the ledger slices, the signed contract versions and
    the report. Exit 1 if anything does not hold."""
    from gateway.services.evidence import verify_bundle

    try:
        data = json.loads(bundle.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{bundle}: not an evidence bundle ({exc})") from None
    pinned = _jwks(keys_source) if keys_source else None
    problems, findings = verify_bundle(data if isinstance(data, dict) else {}, pinned)
    for finding in findings:
        click.echo(f"  {finding}")
    for problem in problems:
        click.echo(f"PROBLEM {problem}")
    click.echo("evidence REFUSED" if problems else "evidence verified")
    sys.exit(1 if problems else 0)
