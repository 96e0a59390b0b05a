"""Guards on the code's shape: the migrations describe the models, and the parts depend on
one another only as the layout says (README, "Layout")."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

from alembic import command

from app.migrate import alembic_config

APP = Path(__file__).resolve().parent.parent / "app"


async def test_the_migrations_create_exactly_the_models(database_url: str) -> None:
    """`alembic check`: a model changed without its migration (or the reverse) fails here,
    on each database (the session's database is migrated to head by the fixture)."""
    await asyncio.to_thread(command.check, alembic_config(database_url))


def app_imports(package: str) -> dict[str, set[str]]:
    """For each module of `app/<package>` (or the one module `app/<name>.py`), the `app.*`
    modules it imports (anywhere in it, functions included)."""
    found: dict[str, set[str]] = {}
    root = APP / package
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        names = _modules(path)
        found[str(path.relative_to(APP.parent))] = {n for n in names if n.startswith("app.")}
    return found


def test_the_codat_client_depends_on_no_other_part_of_the_app() -> None:
    """Codat's client and vocabulary are what receiving and processing share: it may use
    itself and the shared leaves (settings, metric definitions), nothing that uses it."""
    allowed = ("app.codat", "app.config", "app.metrics")
    wrong = {
        module: sorted(n for n in names if not n.startswith(allowed))
        for module, names in app_imports("codat").items()
    }
    assert {m: n for m, n in wrong.items() if n} == {}


def test_the_cli_and_the_commands_do_not_go_through_the_api() -> None:
    """The API and the CLI are front doors beside each other: both call the commands
    (app/processing/commands.py), and neither the CLI nor the commands import app.api."""
    imports = app_imports("cli.py") | app_imports("processing")
    through_api = {
        m: sorted(n for n in names if n.startswith("app.api")) for m, names in imports.items()
    }
    assert {m: n for m, n in through_api.items() if n} == {}


def _modules(path: Path) -> set[str]:
    """Every module a file imports, the app's and others' (`svix`, `svix.webhooks`, ...)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _app_files() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def _part(path: Path) -> str:
    """`webhooks` for app/webhooks/route.py, `cli.py` for app/cli.py."""
    return path.relative_to(APP).parts[0]


def test_receiving_and_processing_do_not_import_each_other() -> None:
    """Siblings that both speak Codat's vocabulary (app/codat), neither using the other."""
    crossing = {
        module: sorted(n for n in names if n.startswith(other))
        for package, other in (("webhooks", "app.processing"), ("processing", "app.webhooks"))
        for module, names in app_imports(package).items()
    }
    assert {m: n for m, n in crossing.items() if n} == {}


def test_only_the_receiver_knows_svix() -> None:
    """Svix signs what Codat sends: verifying it (and signing a test delivery like it) is
    app/webhooks' alone; the change notifications are signed without svix."""
    users = sorted(
        str(path.relative_to(APP.parent))
        for path in _app_files()
        if any(n == "svix" or n.startswith("svix.") for n in _modules(path))
    )
    assert users and all(user.startswith("app/webhooks/") for user in users), users


# What only app/codat may spell: Codat's server and the paths of its API (the fake Codat,
# app/sandbox, is Codat itself). Our own API's paths (/api/v1/companies/...) are not these.
CODAT_SPELLINGS = re.compile(
    r"api\.codat\.io|/dataStatus|/data/(queue|all|info|history)\b|/push\b|/connections/"
)


def _strings(path: Path) -> list[str]:
    """Every string constant of a module, f-strings' literal parts included (with the
    parts between their values joined, so `f"/companies/{c}/push"` reads `/companies//push`)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.JoinedStr):
            found.append(
                "".join(v.value for v in node.values if isinstance(v, ast.Constant))  # type: ignore[misc]
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
    return found


def codat_spellings(path: Path) -> list[str]:
    return [s for s in _strings(path) if CODAT_SPELLINGS.search(s)]


def test_only_the_codat_client_holds_codats_base_url_and_paths() -> None:
    outside = {
        str(path.relative_to(APP.parent)): found
        for path in _app_files()
        if _part(path) not in ("codat", "sandbox") and (found := codat_spellings(path))
    }
    assert outside == {}
    # The rule sees what it is for: the client spells them.
    assert codat_spellings(APP / "codat" / "client.py")
    assert codat_spellings(APP / "codat" / "base.py")
