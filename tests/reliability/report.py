"""The Markdown report: each test adds a section (what it sent, what it saw, the
invariants it checked); the session writes the file at the end."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.reliability.sizes import Size

REPO = Path(__file__).resolve().parents[2]
FULL_REPORT_PATH = REPO / "docs" / "reliability-report.md"


def fmt(value: object) -> str:
    """Numbers as people read them: 12,345 and 0.42."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


@dataclass
class Check:
    text: str
    passed: bool
    detail: str = ""


@dataclass
class Section:
    """One test's part of the report. `check` records an invariant; `finish` asserts them
    all at once, so a failing invariant does not hide the ones after it."""

    order: int
    title: str
    summary: str
    setup: list[str] = field(default_factory=list)
    sent: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Raw Markdown (a table of rounds, say) printed after the notes.
    details: list[str] = field(default_factory=list)
    headline: str = ""
    outcome: str = "did not finish (see the pytest output)"
    seconds: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    def add_sent(self, label: str, value: object) -> None:
        self.sent[label] = fmt(value)

    def add_seen(self, label: str, value: object) -> None:
        self.seen[label] = fmt(value)

    def check(self, text: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(text, bool(passed), detail))
        self.seconds = time.monotonic() - self._started
        return bool(passed)

    def finish(self) -> None:
        self.seconds = time.monotonic() - self._started
        failed = [c for c in self.checks if not c.passed]
        self.outcome = "FAIL" if failed else "pass"
        if failed:
            lines = "\n".join(f"- {c.text}: {c.detail}" for c in failed)
            raise AssertionError(f"{self.title}: {len(failed)} invariant(s) failed\n{lines}")

    def render(self) -> str:
        out = [f"## {self.title}", "", self.summary, ""]
        out.append(f"Result: **{self.outcome}** ({self.seconds:.0f} s)")
        out.append("")
        if self.setup:
            out += ["Set-up:", ""] + [f"- {line}" for line in self.setup] + [""]
        for heading, table in (("What was sent", self.sent), ("What was seen", self.seen)):
            if table:
                out += [f"{heading}:", "", "| | |", "|---|---|"]
                out += [f"| {label} | {value} |" for label, value in table.items()]
                out.append("")
        if self.checks:
            out += ["Invariants checked:", ""]
            for c in self.checks:
                mark = "pass" if c.passed else "**FAIL**"
                detail = f" ({c.detail})" if c.detail else ""
                out.append(f"- {mark}: {c.text}{detail}")
            out.append("")
        if self.notes:
            out += ["Notes:", ""] + [f"- {note}" for note in self.notes] + [""]
        if self.details:
            out += [*self.details, ""]
        return "\n".join(out)


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return out


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


class Report:
    def __init__(self, size: Size) -> None:
        self.size = size
        self.started = datetime.now(UTC)
        self._t0 = time.monotonic()
        self.load_at_start = os.getloadavg()[0]
        self.sections: list[Section] = []
        self.facts: dict[str, str] = {}

    def section(self, order: int, title: str, summary: str) -> Section:
        section = Section(order, title, summary)
        self.sections.append(section)
        return section

    def render(self) -> str:
        sections = sorted(self.sections, key=lambda s: s.order)
        out = [
            "# Reliability report",
            "",
            "Written by the reliability suite (`tests/reliability`, marker `reliability`). "
            "It drives the real service (`codat-webhooks serve` and `worker` processes) over "
            "HTTP on 127.0.0.1 with real Svix signatures, against a fake Codat served on "
            "loopback, and checks what a customer would notice: no acknowledged event lost, "
            "none stored or processed twice, the local copy equal to Codat's data, and a "
            "documented 4xx for every bad request. `make test` runs it at reduced size; "
            "`make reliability` (`RELIABILITY_FULL=1`) at full size, which writes this file.",
            "",
            "| | |",
            "|---|---|",
            f"| size | {self.size.name} |",
            f"| started | {self.started.strftime('%Y-%m-%d %H:%M:%S')} UTC |",
            f"| duration | {time.monotonic() - self._t0:.0f} s |",
            f"| commit | {_git_commit()} |",
            f"| machine | {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"load average {self.load_at_start:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end (other work on the machine shows here) |",
            f"| Python | {platform.python_version()} |",
        ]
        out += [f"| {label} | {value} |" for label, value in self.facts.items()]
        out += ["", "## Summary", "", "| test | result | headline |", "|---|---|---|"]
        for s in sections:
            out.append(f"| {s.title} | {s.outcome} | {s.headline} |")
        out.append("")
        failed = [(s, c) for s in sections for c in s.checks if not c.passed]
        if failed:
            out += ["Invariants that failed:", ""]
            out += [f"- {s.title}: {c.text} ({c.detail})" for s, c in failed]
            out.append("")
        for s in sections:
            out.append(s.render())
        return "\n".join(out).rstrip() + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
