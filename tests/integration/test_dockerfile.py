"""The commands the Dockerfile runs, run here (no image is built: there is no engine).

The Dockerfile is parsed into its instructions; the builder's dependency list is computed
by its own RUN line, the runtime stage's CMD is started as written (on port 0), and its
HEALTHCHECK is run against real servers: plaintext, TLS and mTLS, with the TLS variables the
client verbs read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.certs import Pki
from tests.conftest import Served

ROOT = Path(__file__).resolve().parents[2]
DATA = "/var/lib/runguard"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its arguments, and its stage (0-based)."""

    keyword: str
    arguments: str
    stage: int


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        pending = ""
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(keyword, arguments.strip(), stage))
    return found


def _one(keyword: str, stage: int = 1) -> Instruction:
    matching = [i for i in instructions() if i.keyword == keyword and i.stage == stage]
    assert len(matching) == 1, f"expected one {keyword} in stage {stage}: {matching}"
    return matching[0]


def _exec_form(instruction: Instruction) -> list[str]:
    text = instruction.arguments.removeprefix("CMD ").strip()
    argv = json.loads(text)
    assert isinstance(argv, list), f"{instruction.keyword} is not in exec form"
    return [str(word) for word in argv]


def test_builder_installs_the_dependencies_and_the_etcd_extra(tmp_path: Path) -> None:
    """The builder's RUN line that writes requirements.txt lists pyproject's dependencies and
    its etcd extra, and each is satisfied by what the tests run on."""
    run = next(
        i for i in instructions() if i.keyword == "RUN" and "requirements.txt" in i.arguments
    )
    making = run.arguments.split("&&")[0]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    subprocess.run(["bash", "-c", making], cwd=tmp_path, check=True, timeout=30)
    listed = (tmp_path / "requirements.txt").read_text().split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert listed[:-1] == project["dependencies"] + project["optional-dependencies"]["etcd"]
    assert any(line.startswith("etcd3aio") for line in listed)
    for line in filter(None, listed):
        requirement = Requirement(line)
        assert requirement.specifier.contains(metadata.version(requirement.name)), line


def test_the_runtime_stage_has_a_data_volume_owned_by_its_user() -> None:
    """The runtime stage makes /var/lib/runguard, gives it to the numeric USER, declares it a
    VOLUME and works in it."""
    user = _one("USER").arguments
    assert re.fullmatch(r"\d+:\d+", user), user
    assert json.loads(_one("VOLUME").arguments) == [DATA]
    assert _one("WORKDIR").arguments == DATA
    made = [i.arguments for i in instructions() if i.keyword == "RUN" and i.stage == 1]
    assert any(f"mkdir -p {DATA}" in r and f"chown {user} {DATA}" in r for r in made), made


def _health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = _exec_form(_one("HEALTHCHECK"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNGUARD_")}
    bin_dir = str(Path(sys.executable).parent)
    return subprocess.run(
        argv,
        env={**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_passes_against_a_plaintext_server(served: Callable[..., Served]) -> None:
    """The HEALTHCHECK command reports SERVING (exit 0) for a plaintext server."""
    server = served()
    done = _health({"RUNGUARD_TARGET": server.address})
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr


def test_healthcheck_passes_against_a_tls_server_with_the_client_variables(
    served: Callable[..., Served], pki: Pki
) -> None:
    """Against a TLS server the HEALTHCHECK passes given RUNGUARD_CACERT, and fails (1)
    without it, saying to pass the CA."""
    server = served("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    done = _health({"RUNGUARD_TARGET": server.address, "RUNGUARD_CACERT": str(pki.ca)})
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr
    plain = _health({"RUNGUARD_TARGET": server.address})
    assert plain.returncode == 1
    assert "--cacert" in plain.stderr


def test_healthcheck_passes_against_an_mtls_server_with_a_client_certificate(
    served: Callable[..., Served], pki: Pki
) -> None:
    """Against an mTLS server the HEALTHCHECK passes given RUNGUARD_CERT and RUNGUARD_KEY."""
    server = served(
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--tls-client-ca",
        str(pki.ca),
    )
    done = _health(
        {
            "RUNGUARD_TARGET": server.address,
            "RUNGUARD_CACERT": str(pki.ca),
            "RUNGUARD_CERT": str(pki.alice.cert),
            "RUNGUARD_KEY": str(pki.alice.key),
        }
    )
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr


def test_the_default_command_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    """The CMD, on port 0 instead of 50051, serves on every interface (with its warning), is
    healthy, and on SIGTERM (docker stop) drains and exits 0."""
    argv = [w.replace(":50051", ":0") for w in _exec_form(_one("CMD"))]
    assert argv[:2] == ["runguard", "serve"]
    log = tmp_path / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "runguard.server", *argv[1:]],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r'"port": (\d+), .*"event": "serving"', log.read_text())
            port = found and found.group(1)
            time.sleep(0.05)
        assert port, log.read_text()
        assert '"event": "unauthenticated"' in log.read_text()
        assert _health({"RUNGUARD_TARGET": f"127.0.0.1:{port}"}).returncode == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert '"event": "stopped"' in log.read_text()


@pytest.mark.parametrize("name", ["LICENSE"])
def test_the_license_file_matches_pyproject(name: str) -> None:
    """pyproject.toml says MIT and names LICENSE, which is the MIT licence text."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["license"], project["license-files"]) == ("MIT", [name])
    text = (ROOT / name).read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 The RunGuard authors\n")
    assert "Permission is hereby granted, free of charge" in text
