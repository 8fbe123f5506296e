"""A benchmarked server process: started on a free loopback port, waited for, measured, stopped.

Shared by serve_bench.py and soak_bench.py so both start and stop servers the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server started in its own session (so stop() also ends its workers), ready when
    `ready_path` answers 200 (or 405, for a POST-only route)."""

    def __init__(
        self, command: list[str], port: int, ready_path: str, env: dict | None = None, cwd: Path | None = None
    ) -> None:
        self.port = port
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=cwd,
        )
        deadline = time.monotonic() + 180  # generous: on a shared machine two workers can take a minute
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code in (200, 405):
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server did not start: {command}")

    def rss_mib(self) -> float:
        """Resident memory of the server and all its worker processes."""
        try:
            parent = psutil.Process(self.process.pid)
            procs = [parent, *parent.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
