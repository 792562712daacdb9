"""The ``gateway`` command: keys, contracts, serve, demo, token, consume."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml

from gateway.adapters.stores.contracts_dir import (
    KEYS_SUFFIX,
    load_registry,
    read_documents,
    read_keys,
    read_products,
)
from gateway.adapters.stores.state_dir import write_private
from gateway.core.contracts import ContractState, parse_contract, parse_product
from gateway.core.documents import canonical_bytes, load_yaml, with_signatures
from gateway.core.jose import (
    generate_org_keys,
    parse_private_jwks,
    private_jwks,
    public_jwks,
    sign_detached,
    signature_header,
    signing_key,
)
from gateway.errors import DocumentInvalid, GatewayError
from gateway.services.registry import Registry
from gateway.settings import Settings

PRIVATE_SUFFIX = ".private.jwks.json"


def default_private_dir() -> Path:
    return Path(click.get_app_dir("exchange-gateway")) / "keys"


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def org_of_key_file(path: Path) -> str:
    return path.name.split(".", 1)[0]


def read_signing_key(path: Path) -> Any:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: cannot read a JWKS ({exc})") from None
    try:
        return signing_key(parse_private_jwks(data, source=str(path)))
    except DocumentInvalid as exc:
        raise click.ClickException(exc.detail) from None


@click.group()
@click.version_option(package_name="exchange-gateway")
def main() -> None:
    """Exchange Gateway: share Kafka data products with partners under signed contracts."""


# -- keys -------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Organisation keys (JWKS)."""


def generate_keys(org: str, keys_dir: Path, private_dir: Path, *, force: bool = False) -> Path:
    private_path = private_dir / f"{org}{PRIVATE_SUFFIX}"
    if private_path.exists() and not force:
        raise click.ClickException(f"{private_path} exists; pass --force to replace it")
    key_set = generate_org_keys()
    write_private(private_path, json.dumps(private_jwks(key_set), indent=2).encode())
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / f"{org}{KEYS_SUFFIX}").write_text(json.dumps(public_jwks(key_set), indent=2) + "\n")
    return private_path


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
    private_path = generate_keys(org, keys_dir, private_dir or default_private_dir(), force=force)
    click.echo(f"private keys: {private_path} (keep secret)")
    click.echo(f"public keys:  {keys_dir / (org + KEYS_SUFFIX)}")


# -- contracts --------------------------------------------------------------------------------


@main.group()
def contract() -> None:
    """Contract documents: sign and verify."""


def sign_file(path: Path, key_path: Path, org: str | None = None) -> str:
    """Add (or replace) ``org``'s signature in the contract file at ``path``."""
    org = org or org_of_key_file(key_path)
    key = read_signing_key(key_path)
    text = path.read_text()
    data = load_yaml(text, source=str(path))
    doc = parse_contract(data, source=str(path))
    others = [s for s in doc.contract.signatures if signature_header(s).get("org") != org]
    signature = sign_detached(doc.canonical, key, org=org, signed_at=int(time.time()))
    path.write_text(with_signatures(text, [*others, signature]))
    return org


@contract.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--org", default=None, help="Signing organisation (default: from the key file name).")
def contract_sign(file: Path, key_path: Path, org: str | None) -> None:
    """Sign FILE with a private JWKS; the signature covers the RFC 8785 canonical JSON."""
    try:
        signer = sign_file(file, key_path, org)
    except GatewayError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"signed {file} as {signer}")


def _contract_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


@contract.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--keys-dir", type=click.Path(path_type=Path), default=Path("keys"), show_default=True
)
@click.option("--products-dir", type=click.Path(path_type=Path), default=None)
@click.option("--org", default=None, help="The gateway's own organisation (the provider).")
def contract_verify(
    paths: tuple[Path, ...], keys_dir: Path, products_dir: Path | None, org: str | None
) -> None:
    """Check contracts: document, product, both signatures, validity. Exit 1 on any invalid."""
    files = _contract_files(paths)
    products_dir = products_dir or (files[0].parent / "products" if files else Path("products"))
    now = datetime.now(UTC)
    registry = Registry()
    read_keys(keys_dir, registry)
    read_products(products_dir, registry)
    read_documents(files, registry, gateway_org=org, now=now)
    failed = False
    for cid, history in sorted(registry.histories.items()):
        status = history.status_at(now)
        doc = status.governing or history.latest
        verdict = status.verdict
        ok = verdict.state in (ContractState.ACTIVE, ContractState.NOT_YET_VALID)
        label = "OK" if ok else "REFUSED"
        version = f"{cid} v{doc.contract.version}"
        click.echo(
            f"{label} {doc.source} ({version}): {verdict.reason}: {verdict.detail} [{doc.hash}]"
        )
        failed = failed or not ok
        for entry in history.versions:
            if entry.check.state is ContractState.DRAFT:
                click.echo(f"DRAFT {entry.doc.source}: {entry.check.detail}")
    for refusal in registry.refusals:
        click.echo(f"REFUSED {refusal.source}: {refusal.reason}: {refusal.detail}")
        failed = True
    sys.exit(1 if failed else 0)


def _read_contract(path: Path) -> Any:
    try:
        text = path.read_text()
        return parse_contract(load_yaml(text, source=str(path)), source=str(path), text=text)
    except DocumentInvalid as exc:
        raise click.ClickException(exc.detail) from None


DRAFT_QUOTAS = """\
# quotas:                    # optional; the gateway's settings bound them (docs/quotas.md)
#   records_per_second: 100  # rates slow the stream down, nothing is skipped
#   bytes_per_second: 1000000
#   concurrent_streams: 2    # beyond: 429 with Retry-After
#   bytes_per_day: 1000000000  # per UTC calendar day; beyond: 429 until midnight UTC
"""


@contract.command("new")
@click.argument("product_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--consumer", required=True, help="The partner organisation.")
@click.option("--id", "contract_id", default=None, help="Default: PROVIDER-CONSUMER-PRODUCT.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--months", type=int, default=12, show_default=True, help="Validity from today.")
def contract_new(
    product_file: Path, consumer: str, contract_id: str | None, out: Path | None, months: int
) -> None:
    """A draft contract for a product: every field of its schema listed, all `drop`."""
    text = product_file.read_text()
    try:
        product = parse_product(
            load_yaml(text, source=str(product_file)), source=str(product_file), text=text
        )
    except DocumentInvalid as exc:
        raise click.ClickException(exc.detail) from None
    contract_id = contract_id or f"{product.owner}-{consumer}-{product.product}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    data = {
        "contract": contract_id,
        "version": 1,
        "provider": product.owner,
        "consumer": consumer,
        "product": product.product,
        "purpose": "Describe why the partner receives this data",
        "valid_from": start.isoformat().replace("+00:00", "Z"),
        "valid_until": (start + timedelta(days=30 * months)).isoformat().replace("+00:00", "Z"),
        "fields": dict.fromkeys(product.field_paths() or ["CHANGE-ME"], "drop"),
    }
    header = (
        f"# Draft contract: {product.owner} shares '{product.product}' with {consumer}.\n"
        "# Every field is `drop`: change to `clear` what the partner may receive, state the\n"
        "# purpose, then both parties sign with `gateway contract sign`.\n"
    )
    out = out or product_file.parent.parent / f"{contract_id}.yaml"
    if out.exists():
        raise click.ClickException(f"{out} exists")
    out.write_text(
        header + yaml.safe_dump(data, sort_keys=False) + DRAFT_QUOTAS + "signatures: []\n"
    )
    click.echo(f"draft written to {out}")


@contract.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def contract_show(file: Path) -> None:
    """A contract document in words: parties, terms, fields, signatures."""
    doc = _read_contract(file)
    c = doc.contract
    click.echo(f"{c.contract} v{c.version}  [{doc.hash}]")
    if c.supersedes:
        click.echo(f"  supersedes {c.supersedes}")
    click.echo(f"  {c.provider} shares '{c.product}' with {c.consumer}")
    click.echo(f"  purpose: {c.purpose}")
    for limitation in c.limitations:
        click.echo(f"  limitation: {limitation}")
    if c.terms:
        click.echo(f"  terms: {c.terms.reference} ({c.terms.sha256})")
    if c.retention:
        click.echo(f"  retention: {c.retention.period}; {c.retention.deletion}")
    if c.jurisdiction:
        click.echo(f"  jurisdiction: {c.jurisdiction}")
    click.echo(f"  valid {c.valid_from.isoformat()} to {c.valid_until.isoformat()}")
    for path, rule in c.fields.items():
        click.echo(f"  field {path}: {rule}")
    if c.filter:
        click.echo(f"  filter: {c.filter}")
    for name, value in (c.quotas.model_dump(exclude_none=True) if c.quotas else {}).items():
        click.echo(f"  quota {name}: {value}")
    for signature in c.signatures:
        click.echo(f"  {describe_signature(signature)}")
    if not c.signatures:
        click.echo("  not signed")


def describe_signature(signature: str) -> str:
    try:
        header = signature_header(signature)
    except GatewayError:
        return "signature: not a compact JWS"
    when = header.get("iat")
    at = (
        datetime.fromtimestamp(when, UTC).isoformat()
        if isinstance(when, int)
        else "time not stated"
    )
    return f"signed by {header.get('org')} with key {header.get('kid')} ({header.get('alg')}), {at}"


@contract.command("diff")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def contract_diff(a: Path, b: Path) -> None:
    """What changes from contract A to contract B (fields first)."""
    from gateway.core.diff import diff_contracts

    old, new = _read_contract(a), _read_contract(b)
    click.echo(f"{old.contract.contract} v{old.contract.version} -> v{new.contract.version}")
    changes = diff_contracts(old.contract, new.contract)
    for change in changes:
        click.echo(f"  {change.describe()}")
    if not changes:
        click.echo("  no change in the terms")


@contract.command("history")
@click.argument("contract_id")
@click.option("--contracts-dir", type=click.Path(path_type=Path), default=Path("contracts"))
@click.option("--keys-dir", type=click.Path(path_type=Path), default=Path("keys"))
def contract_history(contract_id: str, contracts_dir: Path, keys_dir: Path) -> None:
    """Every version and statement of a contract, and its state now."""
    now = datetime.now(UTC)
    registry = load_registry(contracts_dir, keys_dir, gateway_org=None, now=now)
    history = registry.histories.get(contract_id)
    if history is None:
        raise click.ClickException(f"no contract {contract_id!r} in {contracts_dir}")
    status = history.status_at(now)
    click.echo(f"{contract_id}: {status.verdict.reason} ({status.verdict.detail})")
    for entry in history.versions:
        c = entry.doc.contract
        mark = "*" if status.governing is entry.doc else " "
        state = "in the chain" if entry.chained else f"{entry.check.reason}: {entry.check.detail}"
        click.echo(f" {mark} v{c.version} {entry.doc.hash} {entry.doc.source}: {state}")
    for said in history.statements:
        s = said.doc.statement
        verdict = "accepted" if said.accepted else f"refused ({said.reason})"
        said_when = f"{s.issued_at.isoformat()} {s.statement.value} by {s.issued_by}"
        click.echo(f"   {said_when}: {s.reason} [{verdict}]")


def write_statement(
    kind: str,
    contract_id: str,
    *,
    reason: str,
    key_path: Path,
    contracts_dir: Path,
    keys_dir: Path,
    org: str | None = None,
    now: datetime | None = None,
) -> Path:
    """Sign a suspend/resume/revoke statement about the version in force and store it beside."""
    org = org or org_of_key_file(key_path)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    registry = load_registry(contracts_dir, keys_dir, gateway_org=None, now=now)
    history = registry.histories.get(contract_id)
    if history is None or not history.chain:
        raise click.ClickException(f"no contract {contract_id!r} signed by both parties")
    version = history.status_at(now).governing or history.chain[-1]
    data = {
        "statement": kind,
        "contract": contract_id,
        "contract_version": version.hash,
        "issued_by": org,
        "issued_at": now.isoformat().replace("+00:00", "Z"),
        "reason": reason,
    }
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    signature = sign_detached(
        canonical_bytes(load_yaml(text, source="statement")), read_signing_key(key_path), org=org
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = contracts_dir / f"{contract_id}.{stamp}.{kind}.yaml"
    path.write_text(with_signatures(text, [signature]))
    return path


def _statement_command(kind: str) -> None:
    helps = {
        "suspend": "Suspend a contract (provider; reversible by `resume`).",
        "resume": "Resume a suspended contract (provider).",
        "revoke": "Revoke a contract for good (either party), with the reason.",
    }

    @contract.command(kind, help=helps[kind])
    @click.argument("contract_id")
    @click.option("--reason", required=True)
    @click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path))
    @click.option("--contracts-dir", type=click.Path(path_type=Path), default=Path("contracts"))
    @click.option("--keys-dir", type=click.Path(path_type=Path), default=Path("keys"))
    @click.option("--org", default=None)
    def command(
        contract_id: str,
        reason: str,
        key_path: Path,
        contracts_dir: Path,
        keys_dir: Path,
        org: str | None,
    ) -> None:
        path = write_statement(
            kind,
            contract_id,
            reason=reason,
            key_path=key_path,
            contracts_dir=contracts_dir,
            keys_dir=keys_dir,
            org=org,
        )
        click.echo(f"{kind}: {path}")


for _kind in ("suspend", "resume", "revoke"):
    _statement_command(_kind)


# -- ledger -----------------------------------------------------------------------------------


@main.group()
def ledger() -> None:
    """The ledger of contracts, tokens and deliveries (a Kafka topic)."""


def _ledger_source(bootstrap_servers: str | None, topic: str | None, file: Path | None) -> Any:
    """Entries from an exported NDJSON file, or from the ledger topic."""
    if file is not None:
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    from gateway.adapters.kafka.ledger import read_entries

    settings = Settings()
    if bootstrap_servers:
        settings.kafka.bootstrap_servers = bootstrap_servers
    if not settings.kafka.bootstrap_servers:
        raise click.ClickException(
            "pass --bootstrap-servers or set GATEWAY_KAFKA__BOOTSTRAP_SERVERS"
        )
    return list(read_entries(settings.kafka.librdkafka_config(), topic or settings.ledger_topic))


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


def ledger_options(command: Any) -> Any:
    for option in reversed(_ledger_options):
        command = option(command)
    return command


@ledger.command("verify")
@ledger_options
def ledger_verify(bootstrap_servers: str | None, topic: str | None, file: Path | None) -> None:
    """Check every chain: edited, removed or reordered entries are reported; exit 1 if any."""
    from gateway.core.ledger import verify

    entries = _ledger_source(bootstrap_servers, topic, file)
    problems = verify(entries)
    chains = {e.get("chain") for e in entries}
    for p in problems:
        click.echo(f"{p.kind.upper()} chain {p.chain} seq {p.seq} (entry {p.position}): {p.detail}")
    click.echo(
        f"{len(entries)} entries in {len(chains)} chains: "
        + ("intact" if not problems else f"{len(problems)} problems")
    )
    sys.exit(1 if problems else 0)


@ledger.command("export")
@ledger_options
def ledger_export(bootstrap_servers: str | None, topic: str | None, file: Path | None) -> None:
    """Print the ledger as NDJSON (for archiving, or `verify --file`)."""
    for entry in _ledger_source(bootstrap_servers, topic, file):
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

    def moment(text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an RFC 3339 time") from None

    entries = _ledger_source(bootstrap_servers, topic, file)
    report = build_report(entries, contract_id, since=moment(since), until=moment(until))
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else render_table(report))


# -- serving ----------------------------------------------------------------------------------


def run_server(settings: Settings) -> None:
    import uvicorn

    from gateway.adapters.http.app import create_app
    from gateway.adapters.kafka.source import KafkaRecordSource
    from gateway.bootstrap import build_gateway

    kafka_config = settings.kafka.librdkafka_config()
    gateway = build_gateway(settings, lambda topic: KafkaRecordSource(kafka_config, topic))
    log = logging.getLogger("gateway")
    if settings.tls_cert is None:
        log.warning(
            "serving plain HTTP on %s:%s (no --tls-cert): run it behind a TLS-terminating proxy",
            settings.host,
            settings.port,
        )
    log.info("issuer %s; %d contracts loaded", settings.issuer(), len(gateway.registry.histories))
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
        log.info("metrics on %s:%d/metrics", settings.host, settings.metrics_port)
    uvicorn.run(
        create_app(gateway),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,
        timeout_graceful_shutdown=5,
    )


@main.command()
@click.option("--contracts", "contracts_dir", type=click.Path(path_type=Path))
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path))
@click.option("--state", "state_dir", type=click.Path(path_type=Path))
@click.option("--bootstrap-servers")
@click.option("--host")
@click.option("--port", type=int)
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path))
@click.option("--org")
@click.option("--public-url")
def serve(bootstrap_servers: str | None, **options: Any) -> None:
    """Serve the partner API. Every option is also a GATEWAY_ setting."""
    configure_logging()
    overrides = {k: v for k, v in options.items() if v is not None}
    settings = Settings(**overrides)
    if bootstrap_servers:
        settings.kafka.bootstrap_servers = bootstrap_servers
    if not settings.kafka.bootstrap_servers:
        raise click.ClickException(
            "no Kafka configured: pass --bootstrap-servers or set GATEWAY_KAFKA__BOOTSTRAP_SERVERS"
            " (`gateway demo` starts an embedded broker)"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.ClickException("--tls-cert and --tls-key go together")
    run_server(settings)


@main.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".demo"), show_default=True
)
def demo(port: int, workdir: Path) -> None:
    """Embedded broker, demo keys and signed contracts, an order producer, and the gateway."""
    from gateway.demo import run_demo

    configure_logging()
    run_demo(port=port, workdir=workdir)


# -- partner side -----------------------------------------------------------------------------


def _client(gateway_url: str, key_path: Path, org: str | None) -> Any:
    from gateway.client import GatewayClient
    from gateway.errors import NoEncryptionKey
    from gateway.services.datakeys import encryption_key

    keys = parse_private_jwks(json.loads(key_path.read_text()), source=str(key_path))
    try:
        enc = encryption_key(keys, "you")
    except NoEncryptionKey:
        enc = None
    return GatewayClient(
        gateway_url,
        org=org or org_of_key_file(key_path),
        key=read_signing_key(key_path),
        encryption_key=enc,
    )


@main.command()
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


@main.command()
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


@main.command("hash-secret")
def hash_secret() -> None:
    """Read a client secret from stdin and print its Argon2 hash for GATEWAY_CLIENTS."""
    from gateway.services.authorization import hash_client_secret

    click.echo(hash_client_secret(sys.stdin.readline().rstrip("\n")))
