"""The streaming response for SSE and NDJSON.

Built on sse-starlette's ``EventSourceResponse`` for its disconnect detection, graceful
shutdown and per-write ``send_timeout`` (a frozen client is dropped without touching other
streams). Events arrive pre-encoded in batches; heartbeats come from the stream itself, so both
formats share one mechanism.
"""

from __future__ import annotations

import logging

from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.types import Receive, Scope, Send

from gateway.core.records import StreamFormat
from gateway.services.streams import Stream

log = logging.getLogger(__name__)


class StreamResponse(EventSourceResponse):
    def __init__(
        self,
        stream: Stream,
        stream_format: StreamFormat,
        send_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._stream = stream
        super().__init__(
            stream.events(),
            headers=headers,
            media_type=stream_format.value,
            ping=0,  # heartbeats are written by the stream in its own format
            send_timeout=send_timeout,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._stream.ended_because = "send_timeout"
            log.info("stream dropped: the client did not take data within the send timeout")
        except OSError:
            log.info("stream dropped: the connection failed")
        finally:  # also when the client left before the first event was produced
            await self._stream.close()
