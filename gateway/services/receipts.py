"""A partner's acknowledgement of a delivery receipt (``core/receipts.py``): checked, recorded
in the ledger, and accepted only once Kafka has acknowledged the entry.

With the receipt (the gateway's signature over what was sent) and the acknowledgement (the
partner's signature over that receipt) both in the ledger, neither side can later deny the
delivery: the provider proves receipt, the partner proves what it was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joserfc.jwk import KeySet

from gateway.core.ledger import timestamp
from gateway.core.receipts import ACKNOWLEDGEMENT, check_acknowledgement
from gateway.services.offers import AcknowledgedLedger, record_or_refuse
from gateway.services.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Acknowledged:
    delivery: str
    seq: int
    records: int
    cursor: str


class Acknowledgements:
    def __init__(
        self,
        *,
        registry: Callable[[], Registry],
        gateway_keys: KeySet,
        ledger: AcknowledgedLedger,
        clock: Callable[[], datetime],
    ) -> None:
        self._registry = registry
        self._gateway_keys = gateway_keys
        self._ledger = ledger
        self._clock = clock

    def acknowledge(
        self, *, org: str, client: str, contract_id: str, receipt: str, signature: str
    ) -> Acknowledged:
        """Check and record ``org``'s acknowledgement. Blocking (it waits for Kafka)."""
        now = self._clock()
        registry = self._registry()
        registry.contract_for(org, contract_id, now)  # 404 unless the caller is its consumer
        claims: dict[str, Any] = check_acknowledgement(
            receipt=receipt,
            signature=signature,
            org=org,
            contract_id=contract_id,
            gateway_keys=self._gateway_keys,
            org_keys=registry.keys.get(org),
        )
        details = {
            "contract": contract_id,
            "org": org,
            "client": client,
            "delivery": claims.get("delivery"),
            "receipt_seq": claims.get("seq"),
            "records": claims.get("records"),
            "receipt": receipt,
            "signature": signature,
        }
        record_or_refuse(self._ledger, timestamp(now), ACKNOWLEDGEMENT, details, "acknowledgement")
        log.info(
            "contract %s: %s acknowledged receipt %s of delivery %s",
            contract_id,
            org,
            claims.get("seq"),
            claims.get("delivery"),
        )
        return Acknowledged(
            str(claims.get("delivery")),
            int(claims.get("seq") or 0),
            int(claims.get("records") or 0),
            str(claims.get("cursor")),
        )
