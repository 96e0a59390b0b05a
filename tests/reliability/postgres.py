"""A PostgreSQL cluster of the suite's own (initdb in a temporary folder, its own port),
so stopping it in the middle of a test harms nothing else on the machine."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.reliability.processes import HOST
from tests.support.ports import free_port


def _binary(name: str) -> str:
    """The newest installed server's tools (Debian keeps them off PATH), else PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return on_path


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parts
    version = parts[parts.index("postgresql") + 1] if "postgresql" in parts else "0"
    return tuple(int(p) for p in version.split(".") if p.isdigit())


class ThrowawayPostgres:
    """initdb, start, stop -m immediate (a crash, as far as clients can tell), start again."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="reliability-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@{HOST}:{self.port}/postgres"
        # initdb refuses to run as root: run the server as the postgres user then.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, user="postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-2000:]}")

    def init(self) -> None:
        self._run(
            _binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={HOST} -c max_connections=200"
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Immediate: every backend is killed at once, connections drop, nothing is flushed
        politely; the next start runs crash recovery."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def version(self) -> str:
        result = subprocess.run(
            [_binary("postgres"), "--version"], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    def destroy(self) -> None:
        """Stop if running and remove every file; safe to call more than once."""
        if self.data.exists():
            subprocess.run(
                [*self._as, _binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
