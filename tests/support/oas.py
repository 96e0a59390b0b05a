"""JSON Schema validators built from Codat's published OpenAPI files.

Why: the fake Codat and the sample webhook bodies are only useful if they match
what Codat really sends, and the specs in ``shared/codat-oas`` are the authority.
Validating against them turns any drift into a failing test.

The specs declare OpenAPI 3.1 (JSON Schema 2020-12) but mark nullable fields with
the 3.0 keyword ``nullable: true``, which a JSON Schema validator ignores (so it
rejects Codat's own nulls). Every such schema is rewritten into a union with
``null`` before validating.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import quote, unquote

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# jsonschema ships no type information (no py.typed; types-jsonschema is not
# installed), so it is imported dynamically: mypy sees a plain module and no
# ``type: ignore`` is needed that could go stale if stubs are added later.
_jsonschema: Any = importlib.import_module("jsonschema")

PLATFORM = "Codat-Platform.json"
PAYABLES_V1 = "Codat-Sync-Payables-v1.json"
PAYABLES_V2 = "Codat-Sync-Payables.json"

_REPO = Path(__file__).resolve().parents[2]
_WRITE_EVENT = re.compile(r"^(?P<data_type>\w+)\.write\.(?P<outcome>successful|unsuccessful)$")
_COMPOSITE_KEYWORDS = ("$ref", "allOf", "anyOf", "oneOf", "not", "if")
_JSON = "application~1json"


class SchemaValidator(Protocol):
    """The part of a ``jsonschema`` validator the tests use."""

    def validate(self, instance: object) -> None:
        """Raise ``jsonschema.ValidationError`` on the first problem."""

    def iter_errors(self, instance: object) -> Iterator[Any]:
        """Yield every ``jsonschema.ValidationError``."""

    def is_valid(self, instance: object) -> bool:
        """Say whether the instance validates."""


def spec_dir() -> Path:
    """Where the spec files live: ``$CODAT_OAS_DIR`` or ``<repo>/../shared/codat-oas``."""
    default = _REPO.parent / "shared" / "codat-oas"
    return Path(os.environ.get("CODAT_OAS_DIR", str(default)))


def samples_dir() -> Path:
    """The sample webhook bodies: ``$CODAT_SHARED_DIR/samples`` (default ``<repo>/../shared``)."""
    return Path(os.environ.get("CODAT_SHARED_DIR", str(_REPO.parent / "shared"))) / "samples"


@functools.lru_cache(maxsize=8)
def load_spec(spec_file: str) -> dict[str, Any]:
    """The spec exactly as published (parsed once per file)."""
    with (spec_dir() / spec_file).open(encoding="utf-8") as handle:
        return cast(dict[str, Any], json.load(handle))


def load_schema_validator(spec_file: str, schema_name: str) -> SchemaValidator:
    """A validator for ``components.schemas.<schema_name>`` of one spec file.

    ``schema_name`` may go deeper (``"WebhookConsumer/definitions/webhookConsumers"``)
    or be a whole JSON pointer into the file (``"#/paths/..."``).
    """
    if schema_name.startswith("#/"):
        return _validator(spec_file, schema_name)
    return _validator(spec_file, "#/components/schemas/" + quote(schema_name, safe="/~"))


def webhook_event_validator(event_type: str) -> SchemaValidator:
    """A validator for a webhook body, from the ``webhooks`` section of Codat-Platform.json.

    Concrete write events (``bills.write.successful``) use the spec's template
    entry ``{dataType}.write.successful``.
    """
    webhooks: dict[str, Any] = load_spec(PLATFORM)["webhooks"]
    name = event_type
    if name not in webhooks:
        match = _WRITE_EVENT.match(event_type)
        if match is None:
            raise KeyError(f"{event_type!r} is not in the webhooks section: {sorted(webhooks)}")
        name = "{dataType}.write." + match["outcome"]
    pointer = f"#/webhooks/{_escape(name)}/post/requestBody/content/{_JSON}/schema"
    return _validator(PLATFORM, pointer)


def response_validator(
    spec_file: str, path: str, method: str, status: str = "200"
) -> SchemaValidator:
    """A validator for an operation's documented JSON response body.

    Follows a ``$ref`` to ``components.responses`` (e.g. ``Conflict``) and handles
    inline response schemas (e.g. the v1 ``dataStatus`` answer).
    """
    response = load_spec(spec_file)["paths"][path][method.lower()]["responses"][status]
    ref = response.get("$ref")
    if isinstance(ref, str):
        base = ref
    else:
        base = f"#/paths/{_escape(path)}/{method.lower()}/responses/{status}"
    return _validator(spec_file, f"{base}/content/{_JSON}/schema")


def error_messages(validator: SchemaValidator, instance: object) -> list[str]:
    """Every validation problem as ``"<json path>: <message>"`` (empty when valid)."""
    found = sorted(validator.iter_errors(instance), key=lambda error: list(error.path))
    return [f"{error.json_path}: {error.message}" for error in found]


def _escape(segment: str) -> str:
    """One JSON pointer segment, URI-fragment safe."""
    return quote(segment.replace("~", "~0").replace("/", "~1"), safe="~")


@functools.lru_cache(maxsize=256)
def _validator(spec_file: str, pointer: str) -> SchemaValidator:
    """A 2020-12 validator whose root is ``pointer`` inside the converted spec."""
    registry, uri, rewrite = _registry(spec_file)
    schema = {"$ref": uri + rewrite(pointer)}
    validator_class = _jsonschema.Draft202012Validator
    return cast(
        SchemaValidator,
        validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER),
    )


@functools.lru_cache(maxsize=8)
def _registry(spec_file: str) -> tuple[Registry[Any], str, Callable[[str], str]]:
    """The converted spec as a ``referencing`` registry, its URI, and the pointer rewriter."""
    wrapped: set[tuple[str, ...]] = set()
    converted = _convert_nullable(copy.deepcopy(load_spec(spec_file)), (), wrapped)

    def rewrite(ref: str) -> str:
        return _rewrite_pointer(ref, wrapped)

    _rewrite_refs(converted, rewrite)
    uri = f"urn:codat-oas:{spec_file}"
    resource: Resource[Any] = DRAFT202012.create_resource(converted)
    registry: Registry[Any] = Registry().with_resource(uri, resource)
    return registry, uri, rewrite


def _convert_nullable(node: Any, path: tuple[str, ...], wrapped: set[tuple[str, ...]]) -> Any:
    """Replace ``nullable: true`` by a union with null, bottom-up.

    A schema with a ``type`` gets ``"null"`` added to it (and ``None`` to its
    ``enum``) in place. A schema built from ``$ref``/``allOf``/... is wrapped in
    ``anyOf: [{type: null}, <schema>]``; its path is recorded in ``wrapped`` so
    that JSON pointers that run through it can be rewritten (``.../anyOf/1/...``).
    """
    if isinstance(node, list):
        return [_convert_nullable(item, (*path, str(i)), wrapped) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {key: _convert_nullable(value, (*path, key), wrapped) for key, value in node.items()}
    nullable = out.get("nullable")
    if not isinstance(nullable, bool):
        return out  # absent, or a property that happens to be called "nullable"
    del out["nullable"]
    if not nullable:
        return out
    if any(keyword in out for keyword in _COMPOSITE_KEYWORDS):
        wrapped.add(path)
        return {"anyOf": [{"type": "null"}, out]}
    if "type" in out:
        types = [out["type"]] if isinstance(out["type"], str) else list(out["type"])
        out["type"] = [*types, "null"] if "null" not in types else types
    if isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def _rewrite_pointer(ref: str, wrapped: set[tuple[str, ...]]) -> str:
    """Map a same-document ``#/...`` pointer from the original to the converted spec."""
    if not ref.startswith("#/"):
        return ref
    raw = ref[2:].split("/")
    decoded = [unquote(part).replace("~1", "/").replace("~0", "~") for part in raw]
    out: list[str] = []
    for i, part in enumerate(raw):
        out.append(part)
        if i < len(raw) - 1 and tuple(decoded[: i + 1]) in wrapped:
            out.extend(("anyOf", "1"))
    return "#/" + "/".join(out)


def _rewrite_refs(node: Any, rewrite: Callable[[str], str]) -> None:
    """Rewrite every ``$ref`` string in place."""
    if isinstance(node, list):
        for item in node:
            _rewrite_refs(item, rewrite)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                node[key] = rewrite(value)
            else:
                _rewrite_refs(value, rewrite)
