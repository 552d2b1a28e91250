"""What each package exports is a decided list: an embedder, a client and a tool can rely on it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib import metadata

import pytest

import runguard
import runguard.contract
import runguard.server

EXPORTS = {
    "runguard": ["__version__"],
    "runguard.contract": [
        "AUTHORIZATION",
        "DEFAULT_TARGET",
        "DETAILS_KEY",
        "JSONValue",
        "canonical_json",
        "fingerprint",
        "key_fingerprint",
    ],
    "runguard.server": [
        "RunGuardServer",
        "ServerConfig",
        "Store",
        "configure_logging",
        "open_store",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_package_exports_exactly_its_names(name: str) -> None:
    """A package's ``__all__`` is its documented list, and every name in it resolves."""
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPORTS[name])
    for exported in module.__all__:
        assert getattr(module, exported) is not None


def test_server_names_are_the_ones_the_modules_define() -> None:
    """``runguard.server.RunGuardServer`` and the rest are the objects of their own modules."""
    from runguard.server.app import RunGuardServer
    from runguard.server.stores import open_store

    assert runguard.server.RunGuardServer is RunGuardServer
    assert runguard.server.open_store is open_store


def test_an_unknown_server_name_is_an_attribute_error() -> None:
    """Asking ``runguard.server`` for a name it does not export fails as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = runguard.server.Nothing


def test_importing_the_server_package_loads_no_grpc() -> None:
    """``import runguard.server`` (which ``runguard.server.entry`` implies) leaves grpc
    unloaded, so the entry point can still set grpc's log level."""
    probe = "import sys, runguard.server.entry; print('grpc' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_version_is_the_distribution_version() -> None:
    """``runguard.__version__`` is the installed distribution's version, one source of truth."""
    assert runguard.__version__ == metadata.version("runguard")


def test_the_command_prints_the_version() -> None:
    """``runguard --version`` prints ``runguard`` and ``runguard.__version__``."""
    done = subprocess.run(
        [sys.executable, "-m", "runguard.server", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"runguard {runguard.__version__}"
