"""Canonical JSON and submission fingerprints, identical from every language.

The canonical form is RFC 8785 (JSON Canonicalization Scheme): object keys
sorted by their UTF-16 code units, no white space, strings escaped as
``JSON.stringify`` does, and numbers written as ECMAScript writes a double
(so ``1`` and ``1.0`` are both ``1``). A fingerprint is the first 32 hex
digits of SHA-256 over the canonical JSON of ``["payload", route, payload]``
or ``["key", route, idempotency_key]``: any language with a JCS library
computes the same value.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal

__all__ = ["JSONValue", "canonical_json", "fingerprint", "key_fingerprint"]

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    # repr gives the shortest digits that round-trip, as ECMAScript does;
    # value = 0.digits x 10^point, as ECMA-262 Number::toString states it.
    all_digits = "".join(map(str, digit_tuple))
    point = len(all_digits) + exponent
    digits = all_digits.rstrip("0")
    k = len(digits)
    prefix = "-" if sign else ""
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"
    return prefix + text


def _write(value: JSONValue, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float):
        out.append(_number(float(value)))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: JSONValue) -> str:
    """The RFC 8785 canonical form of a JSON value.

    Raises:
        ValueError: a number is NaN or infinite.
        TypeError: something is not a JSON value.
    """
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def _digest(parts: JSONValue) -> str:
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:32]


def fingerprint(route: str, payload: JSONValue) -> str:
    """The fingerprint of a submission: ``route`` with a JSON ``payload``."""
    return _digest(["payload", route, payload])


def key_fingerprint(route: str, idempotency_key: str) -> str:
    """The fingerprint of a submission named by an explicit idempotency key."""
    return _digest(["key", route, idempotency_key])
