"""The streaming response for SSE and NDJSON.

Built on sse-starlette's ``EventSourceResponse`` for its disconnect detection, graceful
shutdown and per-write ``send_timeout`` (a frozen client is dropped without touching other
streams). Events arrive pre-encoded in batches; heartbeats come from the stream itself, so both
formats share one mechanism.
"""

from __future__ import annotations

import logging

import anyio
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

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
        self._send_timeout = send_timeout
        super().__init__(
            stream.events(),
            headers=headers,
            media_type=stream_format.value,
            ping=0,  # heartbeats are written by the stream in its own format
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            # The reason is set here, before the events are torn down and the delivery is
            # recorded (sse-starlette's own send_timeout was seen only after: "disconnected").
            with anyio.move_on_after(self._send_timeout) as waited:
                await send(message)
            if waited.cancelled_caught:
                self._stream.ended_because = "send_timeout"
                raise SendTimeoutError

        try:
            await super().__call__(scope, receive, timed)
        except SendTimeoutError:
            log.info("stream dropped: the client did not take data within the send timeout")
        except OSError:
            log.info("stream dropped: the connection failed")
        finally:  # also when the client left before the first event was produced
            await self._stream.close()
