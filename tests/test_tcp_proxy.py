"""The tests' TCP proxy: a connection cut before its pump thread starts is dropped quietly.

``cut()`` closes every connection the proxy holds, and one just accepted may be closed before
its pump registers it: the pump had then raised ``EBADF`` in its thread, which failed whichever
fault test was cutting a broker at that moment."""

from __future__ import annotations

import socket

from tests.tcp_proxy import TcpProxy


def test_a_connection_cut_before_its_pump_starts_is_dropped_quietly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as target:
        proxy = TcpProxy(target.getsockname()[1])
        try:
            client, upstream = socket.socketpair()
            client.close()
            upstream.close()  # as cut() leaves them
            proxy._pump(client, upstream)  # returns, raising nothing
        finally:
            proxy.close()
