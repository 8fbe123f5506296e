"""Real servers the tests start and stop: Prometheus, the Pushgateway, moto, a GCS emulator, or any
daemon on loopback.

Each runs in its own session, is ready when its readiness URL answers 200 (its log is shown if it
exits or never gets there), and is stopped with its whole process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

# Debian's Pushgateway persists to /var/lib/prometheus by default: a test's must keep nothing
PUSHGATEWAY_FLAGS = ["--persistence.file="]


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (bash scripts/system-deps.sh installs it)")
    return found


class Daemon:
    """A server process in its own session on loopback, stopped (its group) at the end."""

    def __init__(
        self, command: list[str], ready_url: str, log: Path, url: str = "", env: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, f"{command[0]} exited:\n{log.read_text()}"
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{command[0]} not ready:\n{log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


def start_prometheus(config: Path, directory: Path) -> Daemon:
    """A real Prometheus with this config file, its TSDB and log under `directory`."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    return Daemon(command, f"{url}/-/ready", directory / "prometheus.log", url)


def start_pushgateway(directory: Path) -> Daemon:
    """A real Pushgateway that keeps nothing on disk, its log under `directory`."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [binary("prometheus-pushgateway"), f"--web.listen-address={url.removeprefix('http://')}"]
    return Daemon([*command, *PUSHGATEWAY_FLAGS], f"{url}/-/ready", directory / "pushgateway.log", url)
