"""The lease tokens the coordinator makes."""

from __future__ import annotations

from runguard.server.coordinator import _new_token


def test_lease_tokens_never_start_with_a_dash() -> None:
    """A lease token is never taken for a flag on a command line (``--token -x…``)."""
    tokens = [_new_token() for _ in range(5000)]
    assert not any(token.startswith("-") for token in tokens)
    assert all(len(token) == 32 for token in tokens)
