"""``gateway demo``: everything a newcomer needs to see a partner stream, on one machine.

Starts the embedded broker (unless Kafka is configured), generates demo keys for ``acme`` (the
provider) and ``globex`` (the partner) into a git-ignored folder, signs the example contracts
as both parties, produces an order event every half second, starts a development identity
provider that gives the ``webshop`` team (the owner of ``orders``) a token, and serves the
gateway.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka
from gateway.adapters.kafka.producer import GuardedProducer
from gateway.adapters.stores.signing import PRIVATE_SUFFIX, generate_keys, sign_file
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.server import run_server
from gateway.services.passwords import hash_secret
from gateway.settings import LegalUser, OidcSettings, RegisteredClient, Settings

PROVIDER, PARTNER = "acme", "globex"
#: The team owning the example product (``contracts/products/orders.yaml``).
TEAM = "webshop"
TEAM_TOKEN_SECONDS = 12 * 3600
COUNTRIES = ["NL", "DE", "FR", "BE", "SE", "ES"]


def prepare(workdir: Path, source: Path) -> tuple[Path, Path, Path]:
    """Demo keys (kept between runs) and freshly signed copies of the example contracts."""
    private_dir, keys_dir, contracts_dir = (
        workdir / "private",
        workdir / "keys",
        workdir / "contracts",
    )
    for org in (PROVIDER, PARTNER):
        if not (private_dir / f"{org}{PRIVATE_SUFFIX}").exists():
            generate_keys(org, keys_dir, private_dir)
    shutil.rmtree(contracts_dir, ignore_errors=True)
    (contracts_dir / "products").mkdir(parents=True)
    for product in sorted((source / "products").glob("*.yaml")):
        shutil.copy(product, contracts_dir / "products" / product.name)
    for contract in sorted(source.glob("*.yaml")):
        target = contracts_dir / contract.name
        shutil.copy(contract, target)
        for org in (PROVIDER, PARTNER):
            sign_file(target, private_dir / f"{org}{PRIVATE_SUFFIX}", org)
    return private_dir, keys_dir, contracts_dir


def order_events(stop: threading.Event, config: dict[str, str], topic: str) -> None:
    # One record per request keeps every broker's end offsets exact (see docs/test-broker).
    producer = GuardedProducer(config, **{"linger.ms": 0})
    n = 0
    while not stop.is_set():
        n += 1
        order = {
            "order_id": f"o-{n}",
            "amount": round(random.uniform(5, 500), 2),  # noqa: S311 (demo data)
            "currency": "EUR",
            "placed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "customer": {
                "name": f"Customer {n % 7}",
                "email": f"customer{n % 7}@example.com",
                "country": random.choice(COUNTRIES),  # noqa: S311 (demo data)
            },
            "payment": {"card": f"4111{random.randrange(10**12):012d}"},  # noqa: S311
        }
        producer.produce(topic, json.dumps(order).encode(), key=f"o-{n}")
        producer.poll(0)
        stop.wait(0.5)
    producer.flush(5)


@contextlib.contextmanager
def kafka(settings: Settings) -> Iterator[dict[str, str]]:
    if settings.kafka.bootstrap_servers:
        yield settings.kafka.librdkafka_config()
        return
    with EmbeddedKafka() as broker:
        settings.kafka.bootstrap_servers = broker.bootstrap_servers
        print(f"embedded Kafka (Tansu) on {broker.bootstrap_servers}")
        yield settings.kafka.librdkafka_config()


def run_demo(*, port: int, workdir: Path, source: Path = Path("contracts")) -> None:
    private_dir, keys_dir, contracts_dir = prepare(workdir, source)
    secret, legal_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client_id = f"{PARTNER}-demo"
    settings = Settings(
        contracts_dir=contracts_dir,
        keys_dir=keys_dir,
        state_dir=workdir / "state",
        port=port,
        org=PROVIDER,
        clients=[
            RegisteredClient(
                client_id=client_id, org=PARTNER, secret_hash=SecretStr(hash_secret(secret))
            )
        ],
        legal_users=[
            LegalUser(username="legal", password_hash=SecretStr(hash_secret(legal_password)))
        ],
    )
    url = settings.issuer()
    key = private_dir / f"{PARTNER}{PRIVATE_SUFFIX}"
    stop = threading.Event()
    identity = DevIdentityProvider()
    settings.oidc = OidcSettings(issuer=identity.url, audience=AUDIENCE)
    team_token = workdir / f"{TEAM}.token"
    team_token.write_text(identity.token(f"{TEAM}-demo", (TEAM,), lifetime=TEAM_TOKEN_SECONDS))
    team_token.chmod(0o600)
    with kafka(settings) as config, identity:
        create_topic(config, "acme.orders", partitions=2)
        producer = threading.Thread(target=order_events, args=(stop, config, "acme.orders"))
        producer.start()
        kafka_at = config["bootstrap.servers"]
        print(
            f"""
Exchange Gateway demo: {url}  (Ctrl-C stops everything)
acme shares 'orders' with globex under contract acme-globex-orders (signed by both).

As the partner globex:
  # 1. a token with the partner's own key (private_key_jwt, RFC 7523)
  TOKEN=$(.venv/bin/gateway token --key {key} --gateway {url})
  #    or with the demo client secret (client_secret_basic)
  curl -s -u {client_id}:{secret} -d grant_type=client_credentials {url}/oauth/token

  # 2. stream as Server-Sent Events: only the contract's fields arrive, and only orders
  #    from NL, DE and BE (its row filter); the e-mail encrypted to globex's key, the
  #    name as a pseudonym, the card masked
  curl -N -H "Authorization: Bearer $TOKEN" {url}/v1/contracts/acme-globex-orders/stream

  # 3. resume exactly after the last event you saw: pass its id
  curl -N -H "Authorization: Bearer $TOKEN" -H "Last-Event-ID: <id>" \\
       {url}/v1/contracts/acme-globex-orders/stream

  # NDJSON, and the pull API
  curl -N -H "Authorization: Bearer $TOKEN" -H "Accept: application/x-ndjson" \\
       {url}/v1/contracts/acme-globex-orders/stream
  curl -H "Authorization: Bearer $TOKEN" "{url}/v1/contracts/acme-globex-orders/records?limit=5"

  # the contract's quotas in force and today's use (curl -i shows the RateLimit headers)
  curl -H "Authorization: Bearer $TOKEN" {url}/v1/usage

  # or let the client do it all, with a checkpoint file
  # (it decrypts the e-mail with globex's private key and verifies it belongs to its record)
  .venv/bin/gateway consume --contract acme-globex-orders --key {key} --gateway {url} \\
       --checkpoint {workdir}/globex.cursor --max-records 3

  # what the contract delivers, machine-readable
  curl -H "Authorization: Bearer $TOKEN" {url}/v1/catalog
  curl -H "Authorization: Bearer $TOKEN" {url}/v1/contracts/acme-globex-orders/schema
  curl -H "Authorization: Bearer $TOKEN" {url}/v1/contracts/acme-globex-orders/asyncapi

As the webshop team, owner of 'orders' (a token of the demo identity provider, {identity.url}):
  TEAM_TOKEN=$(cat {team_token})
  # who consumes the product, and how far behind (also as a page: {url}/teams/products/orders,
  # with the token in an Authorization header)
  curl -H "Authorization: Bearer $TEAM_TOKEN" {url}/v1/products/orders/consumers
  # publish records: validated against the product's schema (docs/publishing.md)
  curl -H "Authorization: Bearer $TEAM_TOKEN" -H 'Content-Type: application/json' \
       -H 'Idempotency-Key: "demo-1"' {url}/v1/products/orders/records \
       --data '[{{"key": "o-x1", "value": {{"order_id": "o-x1", "amount": 12.5, "currency": "EUR",
                 "customer": {{"name": "Ada", "email": "ada@example.com", "country": "NL"}}}}}}]'
  # an invalid record is refused with the reason and copied to acme.orders.dlq
  curl -H "Authorization: Bearer $TEAM_TOKEN" -H 'Content-Type: application/json' \
       {url}/v1/products/orders/records --data '[{{"value": {{"order_id": 7}}}}]'
  .venv/bin/gateway product show contracts/products/orders.yaml

As legal: open {url}/legal (user legal, password {legal_password}); the ledger:
  .venv/bin/gateway ledger report --contract acme-globex-orders --bootstrap-servers {kafka_at}
  .venv/bin/gateway ledger verify --bootstrap-servers {kafka_at}
""",
            flush=True,
        )
        try:
            run_server(settings)
        finally:
            stop.set()
            producer.join(timeout=10)
