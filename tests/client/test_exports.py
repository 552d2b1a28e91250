"""``runguard.client``'s public surface: the names it exports are the documented set."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import runguard.client

PAGE = Path(__file__).resolve().parents[2] / "docs" / "python.md"

EXPORTED = {
    *("Client", "AsyncClient", "Watch", "AsyncWatch", "Holding"),
    *("BeginOptions", "ConnectOptions", "RetryPolicy", "connect_options", "fingerprint"),
    *("Grant", "Run", "RunProgress", "GuardState", "EndResult", "CancelReply", "CancelResult"),
    *("Snapshot", "Change", "Progress", "WatchEvent"),
    *("RunGuardError", "RunRejected", "LeaseLost", "RunNotFound", "Cancelled"),
    *("InvalidArgument", "PermissionDenied", "Unauthenticated", "AlreadyExists"),
    *("ResourceExhausted", "Unavailable", "CallFailed"),
}
"""The names docs/python.md documents."""


def test_all_is_exactly_the_public_set() -> None:
    """``__all__`` lists exactly the public names, each once and sorted."""
    names = runguard.client.__all__
    assert set(names) == EXPORTED
    assert len(names) == len(set(names))
    assert sorted(names, key=lambda name: (not name[0].isupper(), name)) == names


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_each_exported_name_is_importable_and_documented(name: str) -> None:
    """Each exported name is importable from ``runguard.client`` and named in docs/python.md."""
    module = importlib.import_module("runguard.client")
    assert getattr(module, name) is not None
    assert re.search(rf"\b{name}\b", PAGE.read_text(encoding="utf-8")), name


def test_nothing_private_leaks_as_public() -> None:
    """The package's public attributes (no underscore, not a module) are the exported ones."""
    public = {
        name
        for name, value in vars(runguard.client).items()
        if not name.startswith("_") and not isinstance(value, type(runguard))
    }
    assert public - {"annotations"} == EXPORTED
