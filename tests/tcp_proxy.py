"""A TCP proxy on loopback that a test cuts and restores, to take a broker away and back.

``cut()`` closes every connection and refuses new ones (the port stays bound, so nobody else
takes it); ``restore()`` forwards again. Threads only; ``close()`` stops everything.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from gateway.adapters.kafka.embedded import free_port


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self._target = (host, target_port)
        self._listener = socket.create_server((host, self.port))
        self._listener.settimeout(0.1)
        self._open = threading.Event()
        self._open.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        self._open.clear()
        self._close_connections()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stopped.set()
        self._close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _close_connections(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if not self._open.is_set():
                client.close()  # refused while cut
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            thread = threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            try:
                for sock in peers:
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):  # cut (closed) before this thread started
                return self._drop(client, upstream)
            while not self._stopped.is_set() and self._open.is_set():
                for key, _ in selector.select(timeout=0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                        if not data:
                            return self._drop(client, upstream)
                        peers[source].setblocking(True)
                        peers[source].sendall(data)
                        peers[source].setblocking(False)
                    except OSError:
                        return self._drop(client, upstream)
        self._drop(client, upstream)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._sockets.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()
