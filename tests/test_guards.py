"""Guards on the code's shape: the migrations describe the models, and the parts depend on
one another only as the layout says (README, "Layout")."""

from __future__ import annotations

import ast
import asyncio
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
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
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
