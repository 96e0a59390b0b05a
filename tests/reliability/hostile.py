"""Generated bad input for the webhook endpoint, each case with its documented answer.

DESIGN.md and the README's table: missing, malformed or wrong signatures, a wrong secret
and stale or future timestamps get 401; a body over the limit 413; a method other than
POST 405; all of them store nothing. A correctly signed body that is not JSON or not an
envelope is Codat's all the same: 2xx, stored once as `unprocessable`. The content type
is not trusted, the signature is: a signed delivery with any content type is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.reliability.events import encode, read_completed, unknown_event, write_event
from tests.support.signing import ROTATED_SECRET, TEST_SECRET, WRONG_SECRET

Header = tuple[str, str | bytes]
ACCEPTED = "pending"  # a stored envelope waits for the worker
UNPROCESSABLE = "unprocessable"


@dataclass
class Case:
    category: str
    name: str
    headers: list[Header]
    body: bytes | None
    method: str = "POST"
    chunks: int = 0  # > 0: sent with Transfer-Encoding: chunked, no Content-Length
    expect: int = 401
    # None: nothing may be stored; else the one row's status, under `delivery_id`
    stores: str | None = None
    delivery_id: str | None = None
    answer: str | None = None  # the expected "status" of a 2xx answer
    stored_body: bytes | None = None  # what the row must hold, byte for byte


def key_of(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Svix's scheme over the raw bytes and the timestamp exactly as written."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    mac = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed(
    body: bytes,
    *,
    secret: str = TEST_SECRET,
    msg_id: str | None = None,
    timestamp: str | None = None,
    prefix: str = "webhook",
    content_type: str | None = "application/json",
) -> list[Header]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp if timestamp is not None else str(int(time.time()))
    headers: list[Header] = [
        (f"{prefix}-id", msg_id),
        (f"{prefix}-timestamp", timestamp),
        (f"{prefix}-signature", signature(secret, msg_id, timestamp, body)),
    ]
    if content_type is not None:
        headers.append(("content-type", content_type))
    return headers


def header(headers: list[Header], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    raise KeyError(name)


def replace(headers: list[Header], name: str, value: str | bytes | None) -> list[Header]:
    """Headers with `name` set to `value` (None: removed)."""
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"


def good_body() -> bytes:
    return encode(read_completed(COMPANY, CONNECTION, {"bills": True, "suppliers": False}))


def envelope_with(**fields: Any) -> bytes:
    base: dict[str, Any] = json.loads(encode(unknown_event(COMPANY)))
    for key, value in fields.items():
        if value is _MISSING:
            base.pop(key)
        else:
            base[key] = value
    return json.dumps(base, ensure_ascii=False).encode()


_MISSING = object()


def _padded_to(size: int) -> bytes:
    """A valid envelope of exactly `size` bytes (a long string in its payload)."""
    skeleton = envelope_with(payload={"note": ""})
    return envelope_with(payload={"note": "x" * (size - len(skeleton))})


def delivery_id_of(headers: list[Header]) -> str:
    names = {name for name, _ in headers}
    return header(headers, "svix-id" if "svix-id" in names else "webhook-id")


def accepted(
    category: str,
    name: str,
    headers: list[Header],
    body: bytes,
    answer: str = "stored",
    stores: str = ACCEPTED,
) -> Case:
    """A case the service must answer 2xx, with one row stored under its delivery id."""
    return Case(
        category,
        name,
        headers,
        body,
        expect=200,
        stores=stores,
        delivery_id=delivery_id_of(headers),
        answer=answer,
        stored_body=body,
    )


def cases(limit: int) -> Iterator[Case]:
    """Every generated case; `limit` is the service's WEBHOOK_MAX_BODY_BYTES. Consume it
    one case at a time, sending each as it comes: timestamps are made for the moment."""
    yield from _missing_headers()
    yield from _tampered_bodies()
    yield from _tampered_headers()
    yield from _timestamps()
    yield from _wrong_secrets()
    yield from _invalid_utf8()
    yield from _oversized(limit)
    yield from _methods()
    yield from _content_types()
    yield from _unreadable(limit)
    yield from _hostile_payloads()
    yield from _more_than_an_event_names()
    yield from _controls(limit)


def _missing_headers() -> Iterator[Case]:
    body = good_body()
    good = signed(body)
    yield Case(
        "unsigned", "no signature headers at all", [("content-type", "application/json")], body
    )
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        yield Case("unsigned", f"{name} missing", replace(good, name, None), body)
        yield Case("unsigned", f"{name} empty", replace(good, name, ""), body)


def _tampered_bodies() -> Iterator[Case]:
    body = good_body()
    positions = 40
    for i in range(positions):
        at = i * (len(body) - 1) // (positions - 1)
        tampered = bytearray(body)
        tampered[at] ^= 0x01  # ASCII stays ASCII: still UTF-8, only the signature breaks
        yield Case("tampered body", f"one bit flipped at byte {at}", signed(body), bytes(tampered))
    reformatted = json.dumps(json.loads(body), indent=2).encode()
    reordered = json.dumps(dict(reversed(list(json.loads(body).items())))).encode()
    variants = {
        "a space appended": body + b" ",
        "a newline appended": body + b"\n",
        "a byte appended": body + b"x",
        "a space prepended": b" " + body,
        "last byte cut": body[:-1],
        "cut in half": body[: len(body) // 2],
        "emptied": b"",
        "re-indented (same JSON)": reformatted,
        "keys reordered (same JSON)": reordered,
        "a letter escaped as \\u (same JSON)": body.replace(b'"id"', b'"\\u0069d"', 1),
        "another event's body": good_body(),
        "payload swapped for {}": envelope_with(payload={}),
    }
    for name, tampered_body in variants.items():
        yield Case("tampered body", name, signed(body), tampered_body)


def _flip_char(text: str, at: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    replacement = alphabet[(alphabet.index(text[at]) + 7) % 64] if text[at] in alphabet else "A"
    return text[:at] + replacement + text[at + 1 :]


def _tampered_headers() -> Iterator[Case]:
    body = good_body()
    good = signed(body)
    msg_id, timestamp = header(good, "webhook-id"), header(good, "webhook-timestamp")
    sig = header(good, "webhook-signature")
    raw = sig.removeprefix("v1,")
    ids = {
        "a character added to the id": msg_id + "x",
        "another id": f"msg_{uuid.uuid4().hex}",
        "the id upper-cased": msg_id.upper(),
    }
    for name, changed in ids.items():
        yield Case("tampered headers", name, replace(good, "webhook-id", changed), body)
    for delta in (-1, 1):
        moved = str(int(timestamp) + delta)
        yield Case(
            "tampered headers",
            f"timestamp moved {delta:+d} s",
            replace(good, "webhook-timestamp", moved),
            body,
        )
    for i in range(20):
        at = i * (len(raw) - 2) // 19  # stay clear of the "=" padding
        yield Case(
            "tampered headers",
            f"signature character {at} changed",
            replace(good, "webhook-signature", "v1," + _flip_char(raw, at)),
            body,
        )
    other = header(signed(good_body(), msg_id=msg_id, timestamp=timestamp), "webhook-signature")
    wrong = "v1," + base64.b64encode(b"\x00" * 32).decode()
    signatures: dict[str, str | bytes] = {
        "version v2": "v2," + raw,
        "version v1a": "v1a," + raw,
        "no version": raw,
        "version only": "v1,",
        "not base64": "v1,!!!!not-base64!!!!",
        "two commas": f"v1,{raw},v1",
        "the signature of another body": other,
        "signature cut short": "v1," + raw[:20],
        "hex instead of base64": "v1," + base64.b64decode(raw).hex(),
        "lower-cased": "v1," + raw.lower(),
        "two wrong signatures": f"{wrong} {wrong}",
        "sixty wrong signatures": " ".join([wrong] * 60),
        "a space after the version": f"v1, {raw}",
        "a Latin-1 byte": b"v1,\xe9" + raw.encode(),
        "the right one behind a malformed one": f"v1 {sig}",
    }
    for name, value in signatures.items():
        yield Case(
            "tampered headers",
            f"signature: {name}",
            replace(good, "webhook-signature", value),
            body,
        )


def _timestamps() -> Iterator[Case]:
    """Signed correctly, each with its timestamp computed as it is sent (the generator is
    consumed one case at a time), so the edges of the 5-minute tolerance stay put. 305 s
    ahead, not 301: a whole-second timestamp of now is up to a second behind the clock."""
    relative = {
        "301 s old": -301,
        "10 min old": -600,
        "an hour old": -3600,
        "a day old": -86400,
        "29 hours old (past Codat's retries)": -29 * 3600,
        "a week old": -7 * 86400,
        "305 s ahead": 305,
        "10 min ahead": 600,
        "an hour ahead": 3600,
        "a day ahead": 86400,
    }
    for name, offset in relative.items():
        body = good_body()
        moment = int(time.time()) + offset
        yield Case("timestamp", name, signed(body, timestamp=str(moment)), body)
    absolute = {
        "zero (1970)": 0,
        "one": 1,
        "2001": 1_000_000_000,
        "negative": -1,
        "year 2100": 4_102_444_800,
        "9999999999": 9_999_999_999,
        "milliseconds instead of seconds": int(time.time()) * 1000,
        "10^20": 10**20,
    }
    for name, moment in absolute.items():
        body = good_body()
        yield Case("timestamp", name, signed(body, timestamp=str(moment)), body)
    now = int(time.time())
    unreadable: dict[str, str | bytes] = {
        "empty": "",
        "letters": "abc",
        "now": "now",
        "null": "null",
        "ISO 8601": "2026-05-20T10:00:00Z",
        "a time of day": "12:00:00",
        "hexadecimal": hex(now),
        "NaN": "nan",
        "infinity": "inf",
        "minus infinity": "-inf",
        "1e400 (overflows)": "1e400",
        "digits and letters": f"{now}abc",
        "two minus signs": "--1",
        "two dots": "1.2.3",
        "in parentheses": f"({now})",
        "fraction of now": f"{now}.5",
        "now with a plus sign": f"+{now}",
        "now with a leading zero": f"0{now}",
        "now with an exponent": f"{now}e0",
        "now with underscores": f"{now:_}",
        "Arabic-Indic digits (UTF-8)": "".join(chr(0x660 + int(d)) for d in str(now)).encode(),
    }
    for name, value in unreadable.items():
        body = good_body()
        literal = value.decode("latin-1") if isinstance(value, bytes) else value
        headers = replace(signed(body, timestamp=literal), "webhook-timestamp", value)
        yield Case("timestamp", f"non-numeric or not canonical: {name}", headers, body)


def _wrong_secrets() -> Iterator[Case]:
    key = bytearray(key_of(TEST_SECRET))
    key[0] ^= 0x01
    near = "whsec_" + base64.b64encode(bytes(key)).decode()
    unrelated = "whsec_" + base64.b64encode(b"codat-but-not-ours-0123456789abc").decode()
    for i in range(5):
        body = good_body()
        yield Case(
            "wrong secret",
            f"an unconfigured secret #{i + 1}",
            signed(body, secret=WRONG_SECRET),
            body,
        )
    body = good_body()
    yield Case("wrong secret", "the secret with one bit changed", signed(body, secret=near), body)
    yield Case("wrong secret", "an unrelated secret", signed(body, secret=unrelated), body)
    yield Case(
        "wrong secret",
        "svix- headers, unconfigured secret",
        signed(body, secret=WRONG_SECRET, prefix="svix"),
        body,
    )


def _invalid_utf8() -> Iterator[Case]:
    good = good_body()
    bodies = {
        "a lone 0xff": b"\xff",
        "a UTF-16 byte-order mark and NULs": good.decode().encode("utf-16"),
        "an invalid pair inside a string": good.replace(b"Company", b"Comp\xc3\x28ny", 1),
        "an overlong slash": good.replace(b"/", b"\xc0\xaf", 1)
        if b"/" in good
        else good + b"\xc0\xaf",
        "an encoded surrogate": good.replace(b"Company", b"Company\xed\xa0\x80", 1),
        "a multibyte sequence cut at the end": good + b"\xe2\x82",
        "Latin-1 instead of UTF-8": good.replace(b"Company", b"Soci\xe9t\xe9", 1),
        "a continuation byte alone": b"\x80" + good,
    }
    for name, body in bodies.items():
        yield Case("invalid UTF-8", f"signed: {name}", signed(body), body)
    yield Case(
        "invalid UTF-8", "unsigned: a lone 0xff", [("content-type", "application/json")], b"\xff"
    )


def _oversized(limit: int) -> Iterator[Case]:
    for name, size in {"one byte over": limit + 1, "twice the limit": 2 * limit}.items():
        body = _padded_to(size)
        yield Case("oversized", f"signed, {name}", signed(body), body, expect=413)
    body = _padded_to(limit + 1)
    yield Case(
        "oversized", "signed, chunked, no Content-Length", signed(body), body, chunks=64, expect=413
    )
    yield Case(
        "oversized",
        "unsigned, one byte over",
        [("content-type", "application/json")],
        body,
        expect=413,
    )
    yield Case(
        "oversized",
        "wrong secret, one byte over",
        signed(body, secret=WRONG_SECRET),
        body,
        expect=413,
    )
    big = b"x" * (8 * limit)
    yield Case("oversized", "eight times the limit, not JSON", signed(big), big, expect=413)


def _methods() -> Iterator[Case]:
    for method in ("GET", "HEAD"):
        yield Case(
            "method", f"{method}, signed headers", signed(b""), None, method=method, expect=405
        )
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
        body = good_body()
        yield Case(
            "method", f"{method}, signed body", signed(body), body, method=method, expect=405
        )
    for method in ("PUT", "DELETE", "PATCH"):
        body = good_body()
        yield Case(
            "method",
            f"{method}, unsigned",
            [("content-type", "application/json")],
            body,
            method=method,
            expect=405,
        )


def _content_types() -> Iterator[Case]:
    types: dict[str, str | None] = {
        "text/plain": "text/plain",
        "form-urlencoded": "application/x-www-form-urlencoded",
        "multipart": "multipart/form-data; boundary=xyz",
        "XML": "application/xml",
        "none": None,
        "JSON in UTF-16 (a lie)": "application/json; charset=utf-16",
        "octet-stream": "application/octet-stream",
        "garbage": "not/a-type;;;",
    }
    for name, content_type in types.items():
        body = good_body()
        headers = signed(body, content_type=content_type)
        yield accepted("content type", f"signed, {name}: accepted", headers, body)
    for name in ("text/plain", "form-urlencoded", "multipart", "none"):
        body = good_body()
        headers = [("content-type", types[name] or "")] if types[name] else []
        yield Case("content type", f"unsigned, {name}", headers, body)


def _unreadable(limit: int) -> Iterator[Case]:
    envelope = envelope_with()
    not_json = {
        "empty": b"",
        "text": b"not json",
        "an opening brace": b"{",
        "a closing brace": b"}",
        "single quotes": b"{'id': 1}",
        "XML": b"<event/>",
        "null": b"null",
        "true": b"true",
        "a number": b"0",
        "a string": b'"read.completed"',
        "a NUL": b"\x00",
        "a UTF-8 byte-order mark first": b"\xef\xbb\xbf" + envelope,
        "an envelope cut in half": envelope[: len(envelope) // 2],
        "trailing garbage": envelope + b"garbage",
        "a lone surrogate escape": envelope_with(payload={"x": "PLACEHOLDER"}).replace(
            b"PLACEHOLDER", b"\\ud800"
        ),
        "a 5,000-digit number": envelope_with(payload={"n": 0}).replace(
            b'"n": 0', b'"n": ' + b"9" * 5000
        ),
    }
    not_envelope: dict[str, bytes] = {
        "an empty object": b"{}",
        "an empty array": b"[]",
        "an array of envelopes": b"[" + envelope + b"]",
        "no id": envelope_with(id=_MISSING),
        "no eventType": envelope_with(eventType=_MISSING),
        "no generatedDate": envelope_with(generatedDate=_MISSING),
        "no payload": envelope_with(payload=_MISSING),
        "a numeric id": envelope_with(id=123),
        "a null id": envelope_with(id=None),
        "an empty id": envelope_with(id=""),
        "a 256-character id": envelope_with(id="i" * 256),
        "a numeric eventType": envelope_with(eventType=7),
        "an empty eventType": envelope_with(eventType=""),
        "a 256-character eventType": envelope_with(eventType="e" * 256),
        "a list as eventType": envelope_with(eventType=["read.completed"]),
        "a list as payload": envelope_with(payload=[]),
        "a string as payload": envelope_with(payload="x"),
        "a null payload": envelope_with(payload=None),
        "a numeric generatedDate": envelope_with(generatedDate=20260520),
        "arrays nested 300 deep": envelope_with(payload={"a": 0}).replace(
            b'"a": 0', b'"a": ' + b"[" * 300 + b"]" * 300
        ),
        "arrays nested 200,000 deep": envelope_with(payload={"a": 0}).replace(
            b'"a": 0', b'"a": ' + b"[" * 200_000 + b"]" * 200_000
        ),
        "objects nested 50,000 deep": envelope_with(payload={"a": 0}).replace(
            b'"a": 0', b'"a": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000
        ),
        "a 900 KB eventType": envelope_with(eventType="e" * 900_000),
    }
    for group, bodies in (
        ("signed, not JSON", not_json),
        ("signed, not an envelope", not_envelope),
    ):
        for name, body in bodies.items():
            yield accepted(group, name, signed(body), body, UNPROCESSABLE, UNPROCESSABLE)
    hostile_but_valid = {
        "a 900 KB string in the payload": envelope_with(payload={"note": "x" * 900_000}),
        "200,000 emoji in the payload": envelope_with(payload={"note": "\U0001f4b8" * 200_000}),
        "arrays nested 100 deep": envelope_with(payload={"a": 0}).replace(
            b'"a": 0', b'"a": ' + b"[" * 100 + b"]" * 100
        ),
        "duplicate keys": envelope.replace(b'{"id"', b'{"id": "first", "id"', 1),
        "a body of exactly the size limit": _padded_to(limit),
    }
    for name, body in hostile_but_valid.items():
        yield accepted("signed, hostile but an envelope", name, signed(body), body)


def _write_with(**payload: Any) -> bytes:
    event = write_event(COMPANY, CONNECTION, "a9367074-b5c3-42c4-9be4-be129f43577e")
    event["payload"] |= payload
    return encode(event)


def _hostile_payloads() -> Iterator[Case]:
    """Signed envelopes whose content would steer or break the worker (issue 16): kept
    aside as `unprocessable`, never processed, never a 5xx."""
    traversal = "x/../../../webhooks?"
    odd_company = {
        "a path as company id (x/../../../webhooks?)": traversal,
        "a company id that is not a UUID (company-04)": "company-04",
        "a 100 KB company id": "c" * 100_000,
        "a company id holding a NUL": COMPANY + "\x00",
        "a numeric company id": 7,
    }
    for name, company_id in odd_company.items():
        body = envelope_with(payload={"referenceCompany": {"id": company_id}})
        yield accepted("signed, odd ids", name, signed(body), body, UNPROCESSABLE, UNPROCESSABLE)
    odd_write = {
        "a path as push operation key": _write_with(id=traversal),
        "a path as connection id": _write_with(connectionId="../../../webhooks"),
    }
    for name, body in odd_write.items():
        yield accepted("signed, odd ids", name, signed(body), body, UNPROCESSABLE, UNPROCESSABLE)
    for field in ("eventType", "id"):
        body = envelope_with(**{field: "x\x00"})
        yield accepted(
            "signed, values a database cannot store",
            f"a NUL in the {field}",
            signed(body),
            body,
            UNPROCESSABLE,
            UNPROCESSABLE,
        )
    for generated in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        body = envelope_with(generatedDate=generated)
        yield accepted(
            "signed, dates at the edge of the calendar",
            f"generatedDate {generated} (no UTC form)",
            signed(body),
            body,
            UNPROCESSABLE,
            UNPROCESSABLE,
        )


def _more_than_an_event_names() -> Iterator[Case]:
    """Signed envelopes naming more than Codat's events do, or numbers JSON has not: kept
    aside alike on SQLite and PostgreSQL (whose jsonb and columns refused them)."""
    read = json.loads(encode(read_completed(COMPANY, CONNECTION, {"bills": True})))
    many = {**read, "payload": {**read["payload"], "dataTypes": read["payload"]["dataTypes"] * 65}}
    long_type = json.loads(json.dumps(read))
    long_type["payload"]["dataTypes"][0]["dataType"] = "b" * 65
    write = json.loads(_write_with())
    write["eventType"] = "b" * 65 + ".write.successful"
    bodies = {
        "NaN in the payload": envelope_with(payload={"a": 0}).replace(b'"a": 0', b'"a": NaN'),
        "-Infinity in the payload": envelope_with(payload={"a": 0}).replace(
            b'"a": 0', b'"a": -Infinity'
        ),
        "65 dataTypes": encode(many),
        "a 65-character dataType": encode(long_type),
        "a write event of a 65-character data type": encode(write),
    }
    for name, body in bodies.items():
        yield accepted(
            "signed, more than one event names",
            name,
            signed(body),
            body,
            UNPROCESSABLE,
            UNPROCESSABLE,
        )


def _controls(limit: int) -> Iterator[Case]:
    """Deliveries that must be accepted: the barrage must not refuse everything."""
    first_body = good_body()
    first = signed(first_body)
    first_id = delivery_id_of(first)
    yield accepted("control", "the current secret", first, first_body)
    variants: dict[str, dict[str, Any]] = {
        "the rotated secret": {"secret": ROTATED_SECRET},
        "svix- headers": {"prefix": "svix"},
        "290 s old (inside the tolerance)": {"offset": -290},
        "290 s ahead (inside the tolerance)": {"offset": 290},
    }
    for name, options in variants.items():
        body = good_body()
        if "offset" in options:
            options = {"timestamp": str(int(time.time()) + options["offset"])}
        yield accepted("control", name, signed(body, **options), body)
    body = good_body()
    headers = signed(body)
    right = header(headers, "webhook-signature")
    wrong = "v1," + base64.b64encode(b"\x01" * 32).decode()
    two = replace(headers, "webhook-signature", f"{wrong} {right}")
    yield accepted("control", "a wrong signature, then the right one", two, body)
    # The same delivery again (Svix re-signs each retry): a duplicate, still one row.
    again = signed(first_body, msg_id=first_id)
    yield accepted("control", "the first delivery again, re-signed", again, first_body, "duplicate")
    other = good_body()
    case = accepted(
        "control",
        "the first delivery's id with another body",
        signed(other, msg_id=first_id),
        other,
        "duplicate",
    )
    case.stored_body = first_body
    yield case


# -- the status API and the redirects --------------------------------------------------------


@dataclass
class ApiCase:
    """A request to the status API (or any route) and the answer it must get."""

    name: str
    method: str
    path: str
    expect: int
    token: bool = True
    body: bytes | None = None
    chunks: int = 0  # > 0: sent with Transfer-Encoding: chunked, no Content-Length
    host: str | None = None  # a Host header of the client's choosing
    allow: str | None = None  # the Allow header a 405 must carry


def _cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def api_cases(cap: int) -> Iterator[ApiCase]:
    """`cap`: the API's body limit. Each case names the answer the README documents."""
    refresh = f"/api/v1/companies/{COMPANY}/refresh"
    yield ApiCase("no token, 1 MiB body", "POST", refresh, 401, token=False, body=b"x" * 2**20)
    yield ApiCase(
        "no token, 1 MiB chunked", "POST", refresh, 401, token=False, body=b"x" * 2**20, chunks=64
    )
    yield ApiCase("no token, body not JSON", "POST", "/api/v1/events/replay", 401, False, b"{")
    yield ApiCase("token, body one byte over the cap", "POST", refresh, 413, body=b" " * (cap + 1))
    yield ApiCase(
        "token, chunked body over the cap", "POST", refresh, 413, body=b" " * 4 * cap, chunks=64
    )
    near_cap = json.dumps({"event_type": "e" * (cap - 100)}).encode()
    yield ApiCase(
        "token, a filter just under the cap", "POST", "/api/v1/events/replay", 202, True, near_cap
    )
    for path in ("/healthz/", "/readyz/", "/api/v1/events/", "/docs/", "/metrics/"):
        yield ApiCase(f"{path} with Host: evil.example", "GET", path, 404, host="evil.example")
    for url in ("/api/v1/events", "/api/v1/companies", "/api/v1/writes"):
        for values in ((True,), ("\x00",), ("\ud800",), (1.5,)):
            yield ApiCase(
                f"{url} cursor {json.dumps(list(values))}",
                "GET",
                f"{url}?cursor={_cursor(*values)}",
                400,
            )
    for path in (
        "/api/v1/companies/%00",
        f"/api/v1/companies/{COMPANY}/data/%00",
        "/api/v1/writes/%00",
        "/api/v1/events?company_id=%00",
        "/api/v1/writes?data_type=%00",
    ):
        yield ApiCase(f"NUL: {path}", "GET", path, 400)
    for path in ("/api/v1/companies/%ff", "/api/v1/companies/%ed%a0%80", "/api/v1/writes/%c0%af"):
        yield ApiCase(f"not UTF-8: {path}", "GET", path, 404)
    yield ApiCase("not UTF-8 filter", "GET", "/api/v1/events?company_id=%ff", 200)
    replay = "/api/v1/events/replay"
    for body in (b'{"company_id": "\\u0000"}', b'{"event_type": "\\ud800"}'):
        yield ApiCase(f"replay filter {body.decode()}", "POST", replay, 422, body=body)
    for value in ("0.5", "20260503", "1777888329"):
        yield ApiCase(f"date {value}", "GET", f"/api/v1/events?received_before={value}", 422)
    yield ApiCase("unknown status", "GET", "/api/v1/events?status=deadd", 422)
    yield ApiCase("unknown write status", "GET", "/api/v1/writes?status=failed", 422)
    for method, path, allow in (
        ("GET", "/webhooks/codat", "POST"),
        ("PUT", "/webhooks/codat", "POST"),
        ("DELETE", "/api/v1/events", "GET"),
        ("GET", "/api/v1/events/replay", "POST"),
        ("POST", f"/api/v1/companies/{COMPANY}", "GET"),
        ("PUT", "/healthz", "GET"),
    ):
        yield ApiCase(f"{method} {path}", method, path, 405, allow=allow)
