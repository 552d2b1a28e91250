"""Canonical JSON (RFC 8785) and submission fingerprints.

Equal JSON values must give equal fingerprints from every language, so the
canonical form is pinned with literal vectors (several from RFC 8785 itself) and
cross-checked against Node.js: ``JSON.stringify`` for numbers and strings, and
the RFC's reference canonicaliser (sorted keys over ``JSON.stringify``) with
Node's SHA-256 for whole values and fingerprints.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess
from typing import cast

import pytest

from runguard.contract import JSONValue, canonical_json, fingerprint, key_fingerprint

NODE = shutil.which("node") or "/usr/bin/node"

JCS_JS = r"""
const crypto = require("crypto");
function canon(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
  return "{" + Object.keys(v).sort()
    .map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}";
}
function digest(parts) {
  return crypto.createHash("sha256").update(canon(parts), "utf8").digest("hex").slice(0, 32);
}
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const job = JSON.parse(input);
  process.stdout.write(JSON.stringify({
    numbers: job.numbers.map((n) => JSON.stringify(n)),
    strings: job.strings.map((s) => JSON.stringify(s)),
    values: job.values.map(canon),
    payloads: job.payloads.map(([route, p]) => digest(["payload", route, p])),
    keys: job.keys.map(([route, k]) => digest(["key", route, k])),
  }));
});
"""


def run_node(job: dict[str, object]) -> dict[str, list[str]]:
    """Run the JavaScript canonicaliser over ``job`` and return what Node computed."""
    done = subprocess.run(
        [NODE, "-e", JCS_JS],
        input=json.dumps(job, ensure_ascii=True, allow_nan=False),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def from_bits(bits: int) -> float:
    """The IEEE 754 double with the given 64-bit pattern."""
    value: float = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    return value


# --- numbers --------------------------------------------------------------------------


NUMBER_VECTORS = [
    pytest.param(1, "1", id="int-one"),
    pytest.param(1.0, "1", id="float-one"),
    pytest.param(-7, "-7", id="negative-int"),
    pytest.param(0.1, "0.1", id="tenth"),
    pytest.param(-1.5, "-1.5", id="negative-fraction"),
    pytest.param(0.0, "0", id="zero"),
    pytest.param(-0.0, "0", id="negative-zero"),
    pytest.param(1e21, "1e+21", id="1e21-exponent"),
    pytest.param(1e20, "100000000000000000000", id="1e20-digits"),
    pytest.param(1e-7, "1e-7", id="1e-7-exponent"),
    pytest.param(1e-6, "0.000001", id="1e-6-digits"),
    pytest.param(1.5e-5, "0.000015", id="small-fraction"),
    pytest.param(2**53, "9007199254740992", id="2-pow-53"),
    pytest.param(2**53 + 1, "9007199254740992", id="2-pow-53-plus-1-rounds"),
    pytest.param(2**64, "18446744073709552000", id="2-pow-64"),
    pytest.param(123456789012345680000.0, "123456789012345680000", id="21-digits"),
    pytest.param(1.2345678901234567e22, "1.2345678901234568e+22", id="22-digits"),
    pytest.param(1e300 * 10, "1e+301", id="huge"),
    # RFC 8785, Appendix B: IEEE 754 bit patterns and their canonical text.
    pytest.param(from_bits(0x0000000000000001), "5e-324", id="rfc-min-subnormal"),
    pytest.param(from_bits(0x8000000000000001), "-5e-324", id="rfc-neg-min-subnormal"),
    pytest.param(from_bits(0x7FEFFFFFFFFFFFFF), "1.7976931348623157e+308", id="rfc-max"),
    pytest.param(from_bits(0xFFEFFFFFFFFFFFFF), "-1.7976931348623157e+308", id="rfc-min"),
    pytest.param(from_bits(0x4340000000000000), "9007199254740992", id="rfc-2-pow-53"),
    pytest.param(from_bits(0xC340000000000000), "-9007199254740992", id="rfc-neg-2-pow-53"),
    pytest.param(from_bits(0x4430000000000000), "295147905179352830000", id="rfc-2-pow-68"),
    pytest.param(from_bits(0x44B52D02C7E14AF5), "9.999999999999997e+22", id="rfc-below-1e23"),
    pytest.param(from_bits(0x44B52D02C7E14AF6), "1e+23", id="rfc-1e23"),
    pytest.param(from_bits(0x44B52D02C7E14AF7), "1.0000000000000001e+23", id="rfc-above-1e23"),
    pytest.param(from_bits(0x444B1AE4D6E2EF4E), "999999999999999700000", id="rfc-below-1e21"),
    pytest.param(from_bits(0x444B1AE4D6E2EF4F), "999999999999999900000", id="rfc-near-1e21"),
    pytest.param(from_bits(0x444B1AE4D6E2EF50), "1e+21", id="rfc-1e21"),
    pytest.param(from_bits(0x3EB0C6F7A0B5ED8C), "9.999999999999997e-7", id="rfc-below-1e-6"),
    pytest.param(from_bits(0x3EB0C6F7A0B5ED8D), "0.000001", id="rfc-1e-6"),
    pytest.param(from_bits(0x41B3DE4355555553), "333333333.3333332", id="rfc-third-a"),
    pytest.param(from_bits(0x41B3DE4355555554), "333333333.33333325", id="rfc-third-b"),
    pytest.param(from_bits(0x41B3DE4355555555), "333333333.3333333", id="rfc-third-c"),
    pytest.param(from_bits(0x41B3DE4355555556), "333333333.3333334", id="rfc-third-d"),
    pytest.param(from_bits(0x41B3DE4355555557), "333333333.33333343", id="rfc-third-e"),
    pytest.param(
        from_bits(0xBECBF647612F3696), "-0.0000033333333333333333", id="rfc-small-negative"
    ),
    pytest.param(from_bits(0x43143FF3C1CB0959), "1424953923781206.2", id="rfc-16-digits"),
]


@pytest.mark.parametrize(("value", "text"), NUMBER_VECTORS)
def test_numbers_are_written_as_ecmascript_writes_them(value: float, text: str) -> None:
    """Numbers take ECMAScript's shortest round-trip form, so 1 and 1.0 are both ``1``."""
    assert canonical_json(value) == text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param(-math.inf, id="minus-infinity"),
        pytest.param({"a": [1, math.nan]}, id="nested-nan"),
    ],
)
def test_non_finite_numbers_are_not_json(value: JSONValue) -> None:
    """NaN and the infinities have no JSON form: canonical_json and fingerprint raise ValueError."""
    with pytest.raises(ValueError, match="not a JSON number"):
        canonical_json(value)
    with pytest.raises(ValueError, match="not a JSON number"):
        fingerprint("/generate", value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"a": object()}, id="nested-object"),
    ],
)
def test_non_json_values_raise_type_error(value: object) -> None:
    """Something that is not a JSON value raises TypeError."""
    with pytest.raises(TypeError, match="not a JSON value"):
        canonical_json(value)  # type: ignore[arg-type]  # deliberately not JSON


def special_numbers() -> list[float]:
    """Doubles at the edges of every formatting branch, and their neighbours."""
    edges = [0.0, -0.0, 1.0, 0.1, 0.2 + 0.1, 1 / 3, 2 / 3, math.pi, 1e21, 1e-7, 1e-6, 5e-324]
    edges += [float(2**53), float(2**53 + 2), 2.0**63, 2.0**64, 1e20, 1e22, 1e23]
    edges += [123456789012345680000.0, 1.7976931348623157e308, 2.2250738585072014e-308]
    out: list[float] = []
    for x in edges:
        for y in (x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)):
            out += [y, -y]
    return [x for x in out if math.isfinite(x)]


def random_numbers(rng: random.Random) -> list[float | int]:
    """Finite doubles from random bit patterns, random decimals and random integers."""
    out: list[float | int] = []
    while len(out) < 1500:
        value = from_bits(rng.getrandbits(64))
        if math.isfinite(value):
            out.append(value)
    out += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(1500)]
    out += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)) for _ in range(500)]
    out += [rng.randint(-(2**70), 2**70) for _ in range(500)]
    return out


def test_numbers_match_node_json_stringify() -> None:
    """canonical_json writes thousands of numbers exactly as Node's JSON.stringify does."""
    pinned = [(cast(float, p.values[0]), cast(str, p.values[1])) for p in NUMBER_VECTORS]
    numbers = [v for v, _ in pinned] + special_numbers() + random_numbers(random.Random(8785))

    node = run_node({"numbers": numbers, "strings": [], "values": [], "payloads": [], "keys": []})

    ours = [canonical_json(n) for n in numbers]
    mismatches = [
        (n, a, b) for n, a, b in zip(numbers, ours, node["numbers"], strict=True) if a != b
    ]
    assert mismatches == []
    assert node["numbers"][: len(pinned)] == [text for _, text in pinned]


# --- strings and keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param("plain", '"plain"', id="plain"),
        pytest.param('say "hi"', '"say \\"hi\\""', id="quotes"),
        pytest.param("back\\slash", '"back\\\\slash"', id="backslash"),
        pytest.param("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"', id="short-escapes"),
        pytest.param("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"', id="other-controls"),
        pytest.param("\x7f", '"\x7f"', id="delete-as-is"),
        pytest.param("a/b</script>", '"a/b</script>"', id="slash-as-is"),
        pytest.param("café ﬁ €", '"café ﬁ €"', id="unicode-as-is"),
        pytest.param("\U0001f600", '"\U0001f600"', id="non-bmp-as-is"),
        pytest.param("\u2028\u2029", '"\u2028\u2029"', id="line-separators-as-is"),
    ],
)
def test_strings_are_escaped_as_json_stringify_does(value: str, text: str) -> None:
    """Strings escape quotes, backslashes and controls only; other characters stay as they are."""
    assert canonical_json(value) == text


def test_keys_sort_by_utf16_code_units_as_in_rfc_8785() -> None:
    """Object keys sort by UTF-16 code units (RFC 8785 3.2.3): an emoji sorts before U+FB33."""
    value: JSONValue = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }

    assert canonical_json(value) == (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )


def test_a_non_bmp_key_sorts_before_a_high_bmp_key() -> None:
    """U+1F600 (surrogates D83D DE00) sorts before U+FB01, unlike code point order."""
    assert (
        canonical_json({"\ufb01": 1, "\U0001f600": 2, "z": 3})
        == '{"z":3,"\U0001f600":2,"\ufb01":1}'
    )


def test_nested_values_have_no_whitespace_and_sorted_keys() -> None:
    """Containers are written without whitespace, keys sorted at every level, arrays in order."""
    value = json.loads('{ "b" : [ 3 , 1.0, { "y": null, "x": true } ], "a" : false, "": "e" }')

    assert canonical_json(value) == '{"":"e","a":false,"b":[3,1,{"x":true,"y":null}]}'


def test_whitespace_and_key_order_of_the_source_text_do_not_matter() -> None:
    """Two JSON texts of the same value, spaced and ordered differently, canonicalise alike."""
    compact = json.loads('{"route":"/g","n":[1,2.50,-0],"o":{"k":"v","j":1e2}}')
    spaced = json.loads(
        '{\n  "o" : { "j" : 100.0 , "k" : "v" } ,\n "n" : [ 1.0 , 2.5, 0 ],\n  "route" : "/g"\n}'
    )

    assert canonical_json(compact) == canonical_json(spaced)
    assert canonical_json(compact) == '{"n":[1,2.5,0],"o":{"j":100,"k":"v"},"route":"/g"}'


def test_booleans_are_not_numbers() -> None:
    """True and False are written as JSON booleans, never as 1 and 0."""
    assert canonical_json([True, False, 1, 0, None]) == "[true,false,1,0,null]"


def random_string(rng: random.Random) -> str:
    """A short string of ASCII, controls, Latin-1, BMP and non-BMP characters."""
    pools = [
        (0x00, 0x20),
        (0x20, 0x7F),
        (0x7F, 0x100),
        (0x100, 0xD800),
        (0xE000, 0x10000),
        (0x10000, 0x110000),
    ]
    chars = []
    for _ in range(rng.randint(0, 6)):
        lo, hi = rng.choice(pools)
        chars.append(chr(rng.randrange(lo, hi)))
    return "".join(chars)


def random_value(rng: random.Random, depth: int = 0) -> JSONValue:
    """A random JSON value with tricky keys, strings and numbers."""
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**60), 2**60)
    if kind == 3:
        return rng.uniform(-1, 1) * 10.0 ** rng.randint(-25, 25)
    if kind in (4, 5):
        return random_string(rng)
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_strings_and_values_match_node() -> None:
    """Strings and whole values canonicalise exactly as Node's JSON.stringify and sorted keys do."""
    rng = random.Random(2028)
    strings = [random_string(rng) for _ in range(2000)] + ["\u2028", "\x7f", '"\\', ""]
    strings += [chr(c) for c in range(0x20)]
    values = [random_value(rng) for _ in range(500)]
    values.append({"\ufb01": 1, "\U0001f600": 2, "\uffff": 3, "\ud7ff": 4, "\U00010000": 5})

    node = run_node(
        {"numbers": [], "strings": strings, "values": values, "payloads": [], "keys": []}
    )

    assert [canonical_json(s) for s in strings] == node["strings"]
    assert [canonical_json(v) for v in values] == node["values"]


# --- fingerprints ---------------------------------------------------------------------

PAYLOAD: JSONValue = {"topic": "cats", "count": 3, "tags": ["a", "b"], "opts": {"hd": True}}


def test_pinned_fingerprints() -> None:
    """Fingerprints are fixed values: the 32 hex digits other languages must compute too."""
    # Checked with: printf '%s' '<canonical text>' | sha256sum | cut -c1-32
    assert canonical_json(["payload", "/generate-sse", PAYLOAD]) == (
        '["payload","/generate-sse",{"count":3,"opts":{"hd":true},"tags":["a","b"],"topic":"cats"}]'
    )
    assert fingerprint("/generate-sse", PAYLOAD) == "de45f26c6e36a3ae759b9152aed5aaf5"
    assert fingerprint("", None) == "f634d81940c9a458f83a5446496b5e25"
    assert key_fingerprint("/generate-sse", "order-42") == "15239d20c36b4a6d47e591ddea01ea5f"


def test_fingerprints_match_node() -> None:
    """Node hashing its own canonical form gets the same fingerprints as the server."""
    payloads: list[tuple[str, JSONValue]] = [
        ("/generate-sse", PAYLOAD),
        ("", None),
        ("/r", {"\U0001f600": [1.0, 1e21, -0.0], "\ufb01": "\u2028"}),
    ]
    rng = random.Random(53)
    payloads += [(random_string(rng), random_value(rng)) for _ in range(200)]
    keys = [("/generate-sse", "order-42"), ("", ""), ("/r", "\U0001f600\x00")]

    node = run_node(
        {
            "numbers": [],
            "strings": [],
            "values": [],
            "payloads": [list(p) for p in payloads],
            "keys": [list(k) for k in keys],
        }
    )

    assert [fingerprint(r, p) for r, p in payloads] == node["payloads"]
    assert [key_fingerprint(r, k) for r, k in keys] == node["keys"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param({"x": 1, "y": 2}, {"y": 2, "x": 1}, id="key-order"),
        pytest.param({"n": 1}, {"n": 1.0}, id="int-vs-float"),
        pytest.param([0.0], [-0.0], id="zero-vs-negative-zero"),
        pytest.param(
            json.loads('{"a": [1, 2], "b": {"c": 1e3}}'),
            json.loads('{ "b" : { "c" : 1000 }, "a" : [ 1.0 , 2 ] }'),
            id="different-text",
        ),
    ],
)
def test_equal_json_values_have_equal_fingerprints(a: JSONValue, b: JSONValue) -> None:
    """Equal JSON values fingerprint alike, however they were written."""
    assert fingerprint("/generate", a) == fingerprint("/generate", b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(("/generate", {"n": 1}), ("/other", {"n": 1}), id="route"),
        pytest.param(("/generate", {"n": 1}), ("/generate", {"n": 2}), id="payload"),
        pytest.param(("/generate", {"n": 1}), ("/generate", {"n": "1"}), id="number-vs-string"),
        pytest.param(("/generate", [1, 2]), ("/generate", [2, 1]), id="array-order"),
        pytest.param(("a|b", "c"), ("a", "b|c"), id="no-separator-ambiguity"),
        pytest.param(("/generate", None), ("/generate", {}), id="null-vs-empty"),
    ],
)
def test_different_submissions_have_different_fingerprints(
    left: tuple[str, JSONValue], right: tuple[str, JSONValue]
) -> None:
    """Another route or another payload gives another fingerprint."""
    assert fingerprint(*left) != fingerprint(*right)


def test_key_fingerprints_do_not_collide_with_payload_fingerprints() -> None:
    """An idempotency key and a string payload with the same text fingerprint differently."""
    assert key_fingerprint("/generate", "abc") != fingerprint("/generate", "abc")
    assert key_fingerprint("/generate", "abc") != key_fingerprint("/other", "abc")
    assert key_fingerprint("/generate", "abc") == key_fingerprint("/generate", "abc")


def test_fingerprint_is_32_lowercase_hex_digits() -> None:
    """A fingerprint is the first 32 hex digits of a SHA-256."""
    value = fingerprint("/generate", PAYLOAD)

    assert len(value) == 32
    assert set(value) <= set("0123456789abcdef")
