"""`make run` and the README's walkthrough, as a newcomer meets them.

- The first `make install` says what it is doing before the quiet half minute.
- `scripts/run-dev.sh` (what `make run` runs) fills in development values only where the
  environment has none, says each in one line, starts the Codat sandbox only without a
  CODAT_API_KEY, and writes what it chose to var/dev.env: checked with a stand-in
  console script that records how it was called.
- The walkthrough: the script serves for real on SQLite in a scratch directory, the
  README's commands run in a second shell exactly as written (only the port changed, so
  that the test never takes 8000), and end with the bills in the local copy and a
  duplicate shown; the log says each step once; stopping the service stops the sandbox.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.sandbox.demo import demo_company
from app.server import SINGLE_LISTENER_WARNING
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RUN_DEV = ROOT / "scripts" / "run-dev.sh"
VENV = Path(sys.executable).parent.parent  # the interpreter running the tests, not resolved
SETTINGS_OF_MAKE_RUN = (
    "CODAT_WEBHOOK_SECRETS",
    "STATUS_API_TOKENS",
    "CODAT_API_KEY",
    "CODAT_BASE_URL",
    "DATABASE_URL",
    "PORT",
    "HOST",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "EMBEDDED_WORKER",
    "INTERNAL_PORT",
    "CODAT_WEBHOOKS_DEV_ENV",
)


def clean_env(**values: str) -> dict[str, str]:
    """The environment of a newcomer's shell: none of the service's settings."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_OF_MAKE_RUN}
    return env | values


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


# -- the first install -------------------------------------------------------------------


def test_the_first_install_says_what_it_is_doing(tmp_path: Path) -> None:
    venv, calls = tmp_path / "venv", tmp_path / "pip-calls"
    # A python whose `-m venv DIR` makes a venv whose pip only records its arguments.
    executable(
        tmp_path / "python",
        "#!/bin/sh\n"
        'mkdir -p "$3/bin"\n'
        f'printf \'#!/bin/sh\\necho "$*" >> {calls}\\n\' > "$3/bin/pip"\n'
        'chmod +x "$3/bin/pip"\n',
    )
    first = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "install", f"VENV={venv}", f"PYTHON={tmp_path}/python"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"Installing the service and its tools into {venv}")
    assert lines[-1] == "Installed."
    assert all("--quiet" in call for call in calls.read_text().splitlines())
    again = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "install", f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Installing" not in again.stdout, "only the first time"


# -- what run-dev.sh chooses, with a stand-in console script -----------------------------


def run_dev_with_stub(
    tmp_path: Path, env: dict[str, str], *, calls_expected: int
) -> tuple[str, list[str]]:
    """Run the script with a `codat-webhooks` that records each call and its settings."""
    calls = tmp_path / "calls"
    executable(
        tmp_path / "venv" / "bin" / "codat-webhooks",
        "#!/bin/sh\n"
        'echo "$* | key=$CODAT_API_KEY url=$CODAT_BASE_URL'
        f' secrets=$CODAT_WEBHOOK_SECRETS tokens=$STATUS_API_TOKENS" >> {calls}\n',
    )
    done = subprocess.run(
        ["bash", str(RUN_DEV)],
        cwd=tmp_path,
        env=env | {"VENV": str(tmp_path / "venv")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30  # the sandbox is started in the background
    while len(calls.read_text().splitlines()) < calls_expected:
        assert time.monotonic() < deadline, calls.read_text()
        time.sleep(0.05)
    return done.stdout, sorted(calls.read_text().splitlines())


def test_without_settings_make_run_chooses_development_ones_and_the_sandbox(
    tmp_path: Path,
) -> None:
    stdout, calls = run_dev_with_stub(tmp_path, clean_env(SANDBOX_PORT="8111"), calls_expected=3)
    said = stdout.splitlines()
    assert len([line for line in said if "development webhook secret" in line]) == 1
    assert len([line for line in said if "development status API token" in line]) == 1
    [sandbox_line] = [line for line in said if "sandbox" in line]
    assert "No CODAT_API_KEY" in sandbox_line and "http://127.0.0.1:8111" in sandbox_line
    sandbox = "sandbox --port 8111 --api-key codat-sandbox-key --exit-with-parent"
    served = "key=codat-sandbox-key url=http://127.0.0.1:8111"
    assert [call.split(" | ")[0] for call in calls] == ["migrate", sandbox, "serve"]
    assert served in calls[-1] and "tokens=dev-status-token" in calls[-1]
    dev_env = (tmp_path / "var" / "dev.env").read_text().splitlines()
    assert [line.split("=")[0] for line in dev_env] == [
        "CODAT_WEBHOOK_SECRETS",
        "STATUS_API_TOKENS",
        "CODAT_API_KEY",
        "CODAT_BASE_URL",
        "PORT",
    ]
    assert "PORT=8000" in dev_env


def test_with_a_codat_key_make_run_changes_nothing(tmp_path: Path) -> None:
    given = clean_env(
        CODAT_API_KEY="real-key-never-written",
        CODAT_WEBHOOK_SECRETS="whsec_cmVhbC1zZWNyZXQtbmV2ZXItd3JpdHRlbg==",
        STATUS_API_TOKENS="real-token-never-written",
        PORT="9000",
    )
    stdout, calls = run_dev_with_stub(tmp_path, given, calls_expected=2)
    assert stdout.strip() == "", "nothing chosen, nothing said"
    assert [call.split(" | ")[0] for call in calls] == ["migrate", "serve"], "no sandbox"
    assert "key=real-key-never-written url= " in calls[-1], "Codat's own URL (the default)"
    dev_env = (tmp_path / "var" / "dev.env").read_text()
    assert dev_env == "PORT=9000\n", "given values, secrets above all, are not written"


# -- the walkthrough, for real -----------------------------------------------------------


def walkthrough_commands() -> str:
    """The README's second-shell block, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The whole loop in a second shell", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the walkthrough's commands are in a ```sh block"
    return match.group(1)


def wait_for(url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"nothing answered at {url}"
        time.sleep(0.2)


def is_served(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture
def scratch_checkout(tmp_path: Path) -> Iterator[Path]:
    """A directory with the checkout's `.venv`, as the README's `.venv/bin/...` expects."""
    (tmp_path / ".venv").symlink_to(VENV)
    yield tmp_path


def test_the_readme_walkthrough_ends_with_bills_in_the_local_copy_and_a_duplicate(
    scratch_checkout: Path,
) -> None:
    port, sandbox_port = free_port(), free_port()
    log_path = scratch_checkout / "make-run.log"
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            ["bash", str(RUN_DEV)],
            cwd=scratch_checkout,
            env=clean_env(VENV=str(VENV), PORT=str(port), SANDBOX_PORT=str(sandbox_port)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sandbox_url = f"http://127.0.0.1:{sandbox_port}/"
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz")
        wait_for(sandbox_url)
        commands = walkthrough_commands().replace("localhost:8000", f"localhost:{port}")
        second_shell = subprocess.run(
            ["bash", "-e", "-c", commands],
            cwd=scratch_checkout,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        service.send_signal(signal.SIGTERM)  # the script exec'd `serve`: this is serve
        service.wait(timeout=60)
    made_run = log_path.read_text(errors="replace")
    assert second_shell.returncode == 0, second_shell.stderr + made_run[-4000:]

    out = second_shell.stdout
    assert '200 {"status":"stored"}' in out and '200 {"status":"duplicate"}' in out
    company = demo_company()
    assert f"local copy of {company.id}: " in out and "bills 6" in out
    assert '"record_count": 6' in out, "the company shows bills pulled, with their count"
    assert '"id": "bill-1"' in out and '"supplierRef"' in out, "the bills themselves"
    assert "using make run's settings from var/dev.env" in second_shell.stderr

    # The log a person follows: each step once, no alembic plugins, nothing failing.
    assert made_run.count("No CODAT_API_KEY: calling the local Codat sandbox") == 1
    for line in ("event stored", "duplicate delivery ignored", "event processed"):
        assert made_run.count(f"] {line} ") == 1, line
    assert "alembic" not in made_run
    # One warning, by design: one listener serves everything (no INTERNAL_PORT in dev).
    assert made_run.count("[warning") == 1, made_run[-4000:]
    assert f"[warning  ] {SINGLE_LISTENER_WARNING}" in made_run, made_run[-4000:]
    assert "[error" not in made_run, made_run[-4000:]
    deadline = time.monotonic() + 30
    while is_served(sandbox_url):
        assert time.monotonic() < deadline, "the sandbox outlived make run"
        time.sleep(0.2)
