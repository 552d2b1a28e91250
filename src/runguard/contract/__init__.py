"""What the client and the server share beyond the generated ``runguard.v1``: the
submission fingerprint and the constants of the wire. Neither side's code lives here, so
both may import it."""

from runguard.contract.fingerprint import JSONValue, canonical_json, fingerprint, key_fingerprint
from runguard.contract.wire import AUTHORIZATION, DEFAULT_TARGET, DETAILS_KEY

__all__ = [
    "AUTHORIZATION",
    "DEFAULT_TARGET",
    "DETAILS_KEY",
    "JSONValue",
    "canonical_json",
    "fingerprint",
    "key_fingerprint",
]
