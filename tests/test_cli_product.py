"""``gateway product new|show|check``: what a team sees on its terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main

REPO_PRODUCT = Path(__file__).parent.parent / "contracts" / "products" / "orders.yaml"


def test_a_new_descriptor_is_valid_and_shows_its_fields(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "shipments.yaml"
    new = ["product", "new", "shipments", "--team", "logistics", "--owner", "acme"]
    result = runner.invoke(main, [*new, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "descriptor written" in result.output

    check = runner.invoke(main, ["product", "check", str(out)])
    assert check.exit_code == 0
    assert "product shipments 1.0.0 is valid" in check.output

    show = runner.invoke(main, ["product", "show", str(out)])
    assert "shipments 1.0.0  (team logistics of acme)" in show.output
    assert "topic acme.shipments, json records; refused records to acme.shipments.dlq" in (
        show.output
    )
    assert "field id: string, internal" in show.output

    again = runner.invoke(main, [*new, "--out", str(out)])
    assert again.exit_code == 1
    assert "exists" in again.output


def test_the_repository_product_is_valid_and_classifies_every_field() -> None:
    show = CliRunner().invoke(main, ["product", "show", str(REPO_PRODUCT)])
    assert show.exit_code == 0
    fields = [line for line in show.output.splitlines() if line.startswith("  field ")]
    assert len(fields) == 8
    assert not [line for line in fields if line.endswith("unclassified")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("team: orders-team\n", "line 1, team: String should match pattern"),
        ("schema:\n  type: nope\n", 'line 6, schema: not a valid JSON Schema at /type: "nope"'),
        (
            "schema:\n  properties:\n    a: {$ref: 'https://idp.example/x.json'}\n",
            "not a valid JSON Schema at /: Resource 'https://idp.example/x.json'",
        ),
        ("support: {}\n", "support: name at least one of email, url, channel"),
        ("format: xml\n", "format: Input should be 'json', 'avro' or 'json-schema'"),
        ("version: v2\n", "version: String should match pattern"),
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_descriptor_is_one_line_naming_the_line_and_field_and_exit_2(
    tmp_path: Path, change: str, message: str
) -> None:
    base = "owner: acme\nteam: orders-team\ntopic: t\ndescription: d\nproduct: p\n"
    if change.startswith("team:"):
        base = base.replace("team: orders-team\n", "")
        change = "team: 'not a team!'\n"
        text = change + base
    else:
        text = base + change
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["product", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {path}: ")
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output


def test_the_schema_may_be_a_file_beside_the_descriptor(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "orders-1.json").write_text(
        '{"type": "object", "properties": '
        '{"id": {"type": "string", "x-classification": "internal"}}}'
    )
    base = "product: p\nowner: acme\nteam: t\ntopic: t\ndescription: d\n"
    path = tmp_path / "p.yaml"
    runner = CliRunner()

    path.write_text(base + "schema_ref: schemas/orders-1.json\n")
    shown = runner.invoke(main, ["product", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "field id: string, internal" in shown.output

    (tmp_path.parent / "outside.json").write_text("{}")
    (tmp_path / "schemas" / "link.json").symlink_to(tmp_path.parent / "outside.json")
    for ref, message in [
        ("../outside.json", "schema_ref: String should match pattern"),
        ("/etc/passwd.json", "schema_ref: String should match pattern"),
        ("schemas/../../outside.json", "must stay below the descriptor's directory"),
        ("schemas/link.json", "points outside the descriptor's directory"),
        ("schemas/missing.json", "cannot be read (No such file or directory)"),
    ]:
        path.write_text(base + f"schema_ref: {ref}\n")
        refused = runner.invoke(main, ["product", "check", str(path)])
        assert refused.exit_code == 2, refused.output
        assert message in refused.output

    path.write_text(base + "schema_ref: schemas/orders-1.json\nschema: {type: object}\n")
    both = runner.invoke(main, ["product", "check", str(path)])
    assert "give schema or schema_ref, not both" in both.output
