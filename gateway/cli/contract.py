"""``gateway contract``: sign, verify, new, amend, show, diff, history, suspend, resume,
revoke, export."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import yaml

from gateway.adapters.stores.contracts_dir import (
    load_registry,
    read_documents,
    read_keys,
    read_products,
)
from gateway.adapters.stores.signing import sign_file, write_statement
from gateway.cli.common import DocumentPath, InputError, KeyFile, read_product, read_text, reported
from gateway.core.archive import ContractArchive, signers
from gateway.core.contracts import ContractDocument, ContractState, parse_contract
from gateway.core.documents import amended, load_yaml, with_signatures
from gateway.core.jose import describe_signature as core_describe_signature
from gateway.core.times import rfc3339
from gateway.errors import DocumentInvalid
from gateway.services.registry import Registry


@click.group()
def contract() -> None:
    """Contract documents: sign and verify."""


@contract.command("sign")
@click.argument("file", type=DocumentPath())
@click.option("--key", "key_path", required=True, type=KeyFile(), help="Your private JWKS.")
@click.option("--org", default=None, help="Signing organisation (default: from the key file name).")
def contract_sign(file: Path, key_path: Path, org: str | None) -> None:
    """Sign FILE with a private JWKS; the signature covers the RFC 8785 canonical JSON."""
    with reported():
        signer = sign_file(file, key_path, org)
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
@click.argument("paths", nargs=-1, required=True, type=DocumentPath(dir_okay=True))
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


def _read_contract(path: Path) -> ContractDocument:
    text = read_text(path)
    try:
        return parse_contract(load_yaml(text, source=str(path)), source=str(path), text=text)
    except DocumentInvalid as exc:
        raise InputError(exc.detail) from None


DRAFT_QUOTAS = """\
# quotas:                    # optional; the gateway's settings bound them (docs/quotas.md)
#   records_per_second: 100  # rates slow the stream down, nothing is skipped
#   bytes_per_second: 1000000
#   concurrent_streams: 2    # beyond: 429 with Retry-After
#   bytes_per_day: 1000000000  # per UTC calendar day; beyond: 429 until midnight UTC
"""


@contract.command("new")
@click.argument("product_file", type=DocumentPath())
@click.option("--consumer", required=True, help="The partner organisation.")
@click.option("--id", "contract_id", default=None, help="Default: PROVIDER-CONSUMER-PRODUCT.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--months", type=int, default=12, show_default=True, help="Validity from today.")
def contract_new(
    product_file: Path, consumer: str, contract_id: str | None, out: Path | None, months: int
) -> None:
    """A draft contract for a product: every field of its schema listed, all `drop`."""
    product = read_product(product_file)
    contract_id = contract_id or f"{product.owner}-{consumer}-{product.product}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    data = {
        "contract": contract_id,
        "version": 1,
        "provider": product.owner,
        "consumer": consumer,
        "product": product.product,
        "purpose": "Describe why the partner receives this data",
        "valid_from": rfc3339(start),
        "valid_until": rfc3339(start + timedelta(days=30 * months)),
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


@contract.command("amend")
@click.argument("file", type=DocumentPath())
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the new version here (default: FILE itself, as git would keep it).",
)
def contract_amend(file: Path, out: Path | None) -> None:
    """Write the next version of the contract in FILE: `version` + 1 and `supersedes` set to
    the hash of FILE, signatures cleared, ready to edit and sign.

    Editing in place is safe: every gateway that loaded the old version keeps it (in its
    ledger), so the amendment still chains once the old file is gone."""
    doc = _read_contract(file)
    text = amended(read_text(file), version=doc.contract.version + 1, supersedes=doc.hash)
    target = out or file
    target.write_text(text)
    click.echo(
        f"{target}: version {doc.contract.version + 1} of {doc.contract.contract}, superseding "
        f"{doc.hash}; edit it, then both parties sign (`gateway contract sign`)"
    )


@contract.command("show")
@click.argument("file", type=DocumentPath())
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
    info = core_describe_signature(signature)
    if info is None:
        return "signature: not a compact JWS"
    at = info.signed_at.isoformat() if info.signed_at else "time not stated"
    return f"signed by {info.org} with key {info.kid} ({info.alg}), {at}"


@contract.command("diff")
@click.argument("a", type=DocumentPath())
@click.argument("b", type=DocumentPath())
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


@contract.command("export")
@click.argument("contract_id")
@click.option("--contracts-dir", type=click.Path(path_type=Path), default=Path("contracts"))
@click.option("--keys-dir", type=click.Path(path_type=Path), default=Path("keys"))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: stdout.")
@click.option("--bootstrap-servers", default=None)
@click.option("--topic", default=None, help="The ledger topic (default: GATEWAY_LEDGER_TOPIC).")
@click.option("--file", "ledger_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Read an exported ledger (NDJSON) instead of the topic.")  # fmt: skip
def contract_export(
    contract_id: str,
    contracts_dir: Path,
    keys_dir: Path,
    out: Path | None,
    bootstrap_servers: str | None,
    topic: str | None,
    ledger_file: Path | None,
) -> None:
    """The newest version of CONTRACT_ID's file with every signature the gateway holds,
    countersignatures posted over the API included (they are in the ledger): the signed file
    to commit where contracts are distributed from a read-only git directory."""
    from gateway.cli.ledger import ledger_entries

    archive = ContractArchive().learn_all(ledger_entries(bootstrap_servers, topic, ledger_file))
    now = datetime.now(UTC)
    registry = load_registry(contracts_dir, keys_dir, gateway_org=None, now=now, archive=archive)
    history = registry.histories.get(contract_id)
    if history is None:
        raise InputError(f"no contract {contract_id!r} in {contracts_dir}")
    doc = history.latest
    text = with_signatures(read_text(Path(doc.source)), list(doc.contract.signatures))
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    signed = ", ".join(sorted(signers(doc))) or "nobody"
    click.echo(f"{out}: version {doc.contract.version} of {contract_id}, signed by {signed}")


def _statement_command(kind: str) -> None:
    helps = {
        "suspend": "Suspend a contract (provider; reversible by `resume`).",
        "resume": "Resume a suspended contract (provider).",
        "revoke": "Revoke a contract for good (either party), with the reason.",
    }

    @contract.command(kind, help=helps[kind])
    @click.argument("contract_id")
    @click.option("--reason", required=True)
    @click.option("--key", "key_path", required=True, type=KeyFile(), help="Your private JWKS.")
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
        with reported():
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
