"""Subprocesses owned by the test that starts them: stopped, reaped and their pipes closed.

A test that starts a process and fails before stopping it must not leave it running (it would
hold ports and files, and its ``Popen`` would raise a ``ResourceWarning`` at garbage collection
inside some later test, where warnings are errors). ``Processes`` is that owner: the
``processes`` fixture stops everything it started at teardown, whatever the test did.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any

#: How long a process has to exit after its stop signal before it is killed.
STOP_TIMEOUT = 20.0


class DidNotStop(AssertionError):
    """A process ignored its stop signal and had to be killed: a product defect (a hang)."""


def stop(
    process: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
) -> bytes:
    """Send ``sig``, wait up to ``timeout`` and return what the process wrote to its pipes.

    If it has not exited by then it is killed, reaped and ``DidNotStop`` raised: a process that
    does not stop when asked is a defect, never something to wait out. Pipes are always closed.
    """
    output = b""
    try:
        if process.poll() is None:
            process.send_signal(sig)
        try:
            out, err = process.communicate(timeout=timeout)
            output = (out or b"") + (err or b"")
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            output = (out or b"") + (err or b"")
            name = signal.Signals(sig).name
            raise DidNotStop(
                f"{process.args!r} did not exit within {timeout:.0f} s of {name}; "
                f"its output:\n{output.decode(errors='replace')}"
            ) from None
    finally:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        if process.returncode is None:
            process.kill()
            process.wait()
    return output


class Processes:
    """Starts subprocesses and stops every one still running at ``close``."""

    def __init__(self) -> None:
        self._running: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(
        self, args: Sequence[str], *, stop_signal: int = signal.SIGTERM, **popen: Any
    ) -> subprocess.Popen[bytes]:
        popen.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[bytes] = subprocess.Popen(args, **popen)
        self._running.append((process, stop_signal))
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> bytes:
        """Stop ``process`` with the signal it was started with; see :func:`stop`."""
        sig = next(s for p, s in self._running if p is process)
        self._running = [(p, s) for p, s in self._running if p is not process]
        return stop(process, sig, timeout)

    def close(self) -> None:
        """Stop everything still running; the first ``DidNotStop`` is raised after all stop."""
        failures: list[DidNotStop] = []
        while self._running:
            process, sig = self._running.pop()
            try:
                stop(process, sig)
            except DidNotStop as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
