"""requirements.lock (what the image installs) agrees with pyproject.toml (what the project
asks for): every dependency pinned at a version its range admits, every pin hashed. Read
from the files alone, no network: `make lock` is what rewrites the lock."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import requires
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its hashes), from the lock's `name==v \\ --hash=...` blocks."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: list[str] = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := PIN.match(line):
            current = []
            pins[canonicalize_name(match[1])] = (Version(match[2]), current)
        elif line.strip().startswith("--hash=sha256:"):
            current.append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def wanted(requirement: Requirement) -> list[Requirement]:
    """The requirement and what its extras bring (uvicorn[standard]), on the lock's target
    (CPython 3.11 on Linux, as the image), read from the installed package's metadata."""
    found = [requirement]
    environment: dict[str, str] = {
        **{key: str(value) for key, value in default_environment().items()},
        "sys_platform": "linux",
        "platform_system": "Linux",
    }
    for extra in requirement.extras:
        for text in requires(requirement.name) or []:
            nested, marker = Requirement(text), Requirement(text).marker
            if (
                marker is not None
                and marker.evaluate({**environment, "extra": extra})
                and not marker.evaluate({**environment, "extra": ""})
            ):
                found.append(nested)
    return found


def test_every_dependency_is_pinned_in_the_lock_within_its_range() -> None:
    pins = locked()
    problems = []
    for requirement in project_requirements():
        for needed in wanted(requirement):
            name = canonicalize_name(needed.name)
            if name not in pins:
                problems.append(f"{needed} is not in requirements.lock")
            elif not needed.specifier.contains(pins[name][0], prereleases=True):
                problems.append(f"{needed}: the lock pins {pins[name][0]}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_every_pin_in_the_lock_has_hashes() -> None:
    pins = locked()
    assert len(pins) > 30, "the lock holds the whole tree, not only the direct dependencies"
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert unhashed == []
    for _, hashes in pins.values():
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes)


def test_the_lock_admits_no_svix_1_and_the_floors_of_the_advisories() -> None:
    """The reasons for the floors (pyproject.toml), checked where the image gets them."""
    pins = locked()
    assert pins["svix"][0].major == 2
    assert pins["h11"][0] >= Version("0.16")
    assert pins["starlette"][0] >= Version("0.49.1")
