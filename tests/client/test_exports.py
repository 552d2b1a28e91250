"""``runguard.client``'s public surface: the names it exports are the documented set."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import runguard.client
import runguard.server

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


def _client_imports(path: Path) -> list[str]:
    """The dotted names of ``runguard.client`` that a module imports, with each imported
    name of a ``from`` import."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return [name for name in found if name.startswith("runguard.client.")]


def test_the_server_uses_only_the_clients_public_modules() -> None:
    """No module of ``runguard.server`` reaches into a private (underscore) part of
    ``runguard.client``."""
    server = Path(runguard.server.__file__).parent
    private = [
        f"{path.relative_to(server)}: {name}"
        for path in sorted(server.rglob("*.py"))
        for name in _client_imports(path)
        if any(part.startswith("_") for part in name.split(".")[2:])
    ]
    assert private == []
