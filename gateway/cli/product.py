"""``gateway product``: the commands of a team that publishes a data product."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from gateway.adapters.stores.contracts_dir import ContractsDirectory
from gateway.cli.common import DocumentPath, InputError, read_product
from gateway.services.products import schema_change_refusal

PRODUCT_TEMPLATE = """\
# Data product '{product}', owned by team '{team}' (docs/publishing.md).
# Check it with `gateway product check {path}` before it is deployed.
product: {product}
owner: {owner}                  # the organisation offering it (contracts' provider)
team: {team}                    # only this team (and admins) may publish or see consumers
topic: {topic}
description: Say what one record is and when it is written.
version: 1.0.0                  # the schema's version: raise it with every schema change
format: json                    # json, avro or json-schema (those two: registry wire format)
retention: P7D                  # how long the topic keeps records
support:
  email: {team}@{owner}.example
# dead_letter_topic: {topic}.dlq   # where refused records go (this is the default)
schema:                         # JSON Schema of one record; x-classification per field
  type: object
  required: [id]
  properties:
    id: {{type: string, x-classification: internal}}
"""


@click.group()
def product() -> None:
    """Create, show and check data product descriptors."""


@product.command("new")
@click.argument("name")
@click.option("--team", required=True, help="The owning team (as the identity provider names it).")
@click.option("--owner", required=True, help="Your organisation.")
@click.option("--topic", default=None, help="Default: OWNER.NAME.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None,
    help="Default: contracts/products/NAME.yaml.",
)  # fmt: skip
def product_new(name: str, team: str, owner: str, topic: str | None, out: Path | None) -> None:
    """A descriptor to fill in: the team, the topic, a starter schema."""
    out = out or Path("contracts") / "products" / f"{name}.yaml"
    if out.exists():
        raise click.ClickException(f"{out} exists")
    text = PRODUCT_TEMPLATE.format(
        product=name, owner=owner, team=team, topic=topic or f"{owner}.{name}", path=out
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    try:
        read_product(out)
    except InputError:
        out.unlink()
        raise
    click.echo(f"descriptor written to {out}")


@product.command("show")
@click.argument("file", type=DocumentPath())
def product_show(file: Path) -> None:
    """A product descriptor in words: owner, topic, format, fields and their classification."""
    p = read_product(file)
    click.echo(f"{p.product} {p.version}  (team {p.team} of {p.owner})")
    click.echo(f"  {p.description}")
    click.echo(f"  topic {p.topic}, {p.format.value} records; refused records to {p.dlq_topic}")
    if p.retention:
        click.echo(f"  retention {p.retention}")
    if p.support:
        contacts = (p.support.email, p.support.url, p.support.channel)
        click.echo(f"  support: {', '.join(c for c in contacts if c)}")
    for path, node in p.field_schemas():
        node = node if isinstance(node, dict) else {}
        kind = node.get("type", "any")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        classification = node.get("x-classification", "unclassified")
        click.echo(f"  field {path}: {kind}, {classification}")


@product.command("check")
@click.argument("file", type=DocumentPath())
@click.option(
    "--contracts-dir", type=click.Path(path_type=Path), default=Path("contracts"),
    show_default=True, help="The contracts in force (and the product's version in force).",
)  # fmt: skip
@click.option(
    "--keys-dir", type=click.Path(path_type=Path), default=Path("keys"), show_default=True
)
def product_check(file: Path, contracts_dir: Path, keys_dir: Path) -> None:
    """Refuse a descriptor that is malformed (naming the line and field), or a new schema
    version that would break a contract in force (naming the contracts and fields)."""
    new = read_product(file)
    if contracts_dir.is_dir():
        registry = ContractsDirectory(contracts_dir, keys_dir).load(
            gateway_org=None, now=datetime.now(UTC)
        )
        before = registry.products.get(new.product)
        refusal = schema_change_refusal(before, new, registry, datetime.now(UTC))
        if refusal is not None:
            raise InputError(f"{file}: {refusal}")
        if before is not None and before.json_schema != new.json_schema:
            relying = len(registry.contracts_relying_on(new.product, datetime.now(UTC)))
            click.echo(
                f"{file}: schema {before.version} -> {new.version} is compatible with the "
                f"{relying} contract(s) relying on {new.product}"
            )
    click.echo(f"{file}: product {new.product} {new.version} is valid")
