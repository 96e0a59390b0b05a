"""The service as real processes: `codat-webhooks serve` and `worker`, on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import API_KEY
from tests.support.ports import free_port
from tests.support.signing import ROTATED_SECRET, TEST_SECRET

HOST = "127.0.0.1"
# Nothing listens on the discard port: a service that needs no Codat still has a URL.
NO_CODAT = "http://127.0.0.1:9"


def service_env(database_url: str, *, codat_url: str = NO_CODAT, **extra: str) -> dict[str, str]:
    """Everything the service reads, set explicitly so the caller's environment cannot leak in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CODAT_", "WORKER_", "WEBHOOK_", "PULL_", "REFRESH_"))
        and key not in ("DATABASE_URL", "PORT", "HOST", "INTERNAL_PORT", "EMBEDDED_WORKER")
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "CODAT_WEBHOOK_SECRETS": f"{TEST_SECRET},{ROTATED_SECRET}",
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat_url,
            "HOST": HOST,
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "WORKER_POLL_INTERVAL": "0.1",
            "WORKER_RETRY_BASE_SECONDS": "0.5",
            "WORKER_RETRY_MAX_SECONDS": "2",
            "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
            "PULL_DEBOUNCE_SECONDS": "0",
        }
    )
    env.update(extra)
    return env


def peak_rss(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class ManagedProcess:
    """One `python -m app.cli ...` process, its stderr in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=Path(__file__).resolve().parents[2],
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease handed back, as when a machine dies."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every process a test starts; all of them are stopped when the test ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, args, env, self.log_dir / f"{name}.log")
        self.started.append(process)
        return process

    async def serve(self, name: str, env: dict[str, str]) -> Service:
        port = free_port()
        process = self.start(name, ["serve"], {**env, "PORT": str(port)})
        service = Service(process, f"http://{HOST}:{port}")
        await service.wait_healthy()
        return service

    def serve_blocking(self, name: str, env: dict[str, str]) -> Service:
        port = free_port()
        process = self.start(name, ["serve"], {**env, "PORT": str(port)})
        service = Service(process, f"http://{HOST}:{port}")
        service.wait_healthy_blocking()
        return service

    def worker(self, name: str, env: dict[str, str]) -> ManagedProcess:
        return self.start(name, ["worker"], env)

    def stop_all(self) -> None:
        for process in self.started:
            try:
                process.stop(timeout=10)
            except (OSError, subprocess.SubprocessError):
                process.kill()


class Service:
    """A `serve` process and its base URL."""

    def __init__(self, process: ManagedProcess, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.webhook_url = f"{base_url}/webhooks/codat"

    async def wait_healthy(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if not self.process.alive:
                    raise AssertionError(
                        f"{self.process.name} exited with {self.process.popen.returncode}:\n"
                        + self.process.log_tail()
                    )
                try:
                    if (await client.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.process.name} did not answer /healthz in time")
                await asyncio.sleep(0.1)

    def wait_healthy_blocking(self, within: float = 30) -> None:
        """The same, from a test that is not async (hypothesis drives plain functions)."""
        deadline = time.monotonic() + within
        with httpx.Client(timeout=2) as client:
            while True:
                if not self.process.alive:
                    raise AssertionError(
                        f"{self.process.name} exited with {self.process.popen.returncode}:\n"
                        + self.process.log_tail()
                    )
                try:
                    if client.get(f"{self.base_url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.process.name} did not answer /healthz in time")
                time.sleep(0.1)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(f"{self.base_url}{path}")

    async def metric_values(self, name: str) -> dict[str, float]:
        """`{labels: value}` for one counter of /metrics (labels as the text shows them)."""
        text = (await self.get("/metrics")).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels, _, value = line[len(name) :].rpartition(" ")
                values[labels] = float(value)
        return values
