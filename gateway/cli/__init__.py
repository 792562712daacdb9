"""The ``gateway`` command: keys, contracts, products, ledger, serve, demo, token, consume.

A thin layer of click commands, one module per group: they parse options, call the use cases
(``adapters/stores/signing.py``, ``server.py``, ``demo.py``, the partner ``client.py``, ...)
and print. Nothing imports the command line back.
"""

from __future__ import annotations

import click

from gateway.cli import contract as _contract
from gateway.cli import keys as _keys
from gateway.cli import ledger as _ledger
from gateway.cli import partner as _partner
from gateway.cli import product as _product
from gateway.cli import serve as _serve
from gateway.cli import state as _state

__all__ = ["main"]


@click.group()
@click.version_option(package_name="exchange-gateway")
def main() -> None:
    """Exchange Gateway: share Kafka data products with partners under signed contracts."""


main.add_command(_keys.keys)
main.add_command(_contract.contract)
main.add_command(_product.product)
main.add_command(_ledger.ledger)
main.add_command(_serve.serve)
main.add_command(_serve.demo)
main.add_command(_state.state)
main.add_command(_partner.token)
main.add_command(_partner.consume)
main.add_command(_partner.hash_secret)
