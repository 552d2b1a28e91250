"""The documented limits of every request field (docs/configuration.md lists them)."""

from __future__ import annotations

import re

from runguard.server.config import GUARD_PATTERN

__all__ = [
    "CANCEL_REASON_MAX_CHARS",
    "DEDUP_WINDOW_MAX",
    "EPOCH_MAX_CHARS",
    "GUARD_PATTERN",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "LABELS_MAX",
    "LABEL_KEY_PATTERN",
    "LABEL_VALUE_MAX_CHARS",
    "LEASE_TOKEN_MAX_CHARS",
    "LIST_PAGE_DEFAULT",
    "LIST_PAGE_MAX",
    "MAX_QUEUE_MAX",
    "OPERATION_ID_PATTERN",
    "PAYLOAD_MAX_BYTES",
    "PAYLOAD_MAX_DEPTH",
    "PROGRESS_MESSAGE_MAX_CHARS",
    "RESULT_MAX_BYTES",
    "ROUTE_MAX_CHARS",
    "WATCH_GUARDS_MAX",
]

OPERATION_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
"""An operation_id: 1 to 128 characters of letters, digits and ``._:/@-``."""

ROUTE_MAX_CHARS = 256
"""A route: at most 256 characters, no control characters."""

IDEMPOTENCY_KEY_MAX_CHARS = 256
"""An idempotency_key: 1 to 256 characters, no control characters."""

PAYLOAD_MAX_BYTES = 64 * 1024
"""A payload: at most 64 KiB as serialized protobuf."""

PAYLOAD_MAX_DEPTH = 32
"""A payload: at most 32 levels of nested lists and objects."""

LABELS_MAX = 16
"""At most 16 labels on a run."""

LABEL_KEY_PATTERN = re.compile(r"[A-Za-z0-9._/-]{1,63}")
"""A label key: 1 to 63 characters of letters, digits and ``._/-``."""

LABEL_VALUE_MAX_CHARS = 256
"""A label value: at most 256 characters, no control characters."""

LEASE_TOKEN_MAX_CHARS = 128
"""A lease token: at most 128 characters (the server makes 32)."""

WATCH_GUARDS_MAX = 1000
"""A Watch names at most 1000 guards."""

EPOCH_MAX_CHARS = 64
"""An epoch: at most 64 characters."""

RESULT_MAX_BYTES = 4 * 1024
"""An End's result: at most 4 KiB as serialized protobuf (and 32 levels deep)."""

PROGRESS_MESSAGE_MAX_CHARS = 256
"""A progress message: at most 256 characters, no control characters."""

CANCEL_REASON_MAX_CHARS = 256
"""A Cancel's reason: at most 256 characters, no control characters."""
DEDUP_WINDOW_MAX = 30 * 24 * 3600.0
"""ConfigureGuard's dedup_window: at most 30 days."""

MAX_QUEUE_MAX = 100_000
"""ConfigureGuard's max_queue: at most 100,000 callers queued per guard."""

LIST_PAGE_DEFAULT = 100
"""ListGuards' page size when the request names none."""

LIST_PAGE_MAX = 1000
"""ListGuards returns at most 1000 guards a page."""
