"""Real etcd clusters for the tests: one member or three, on loopback, own data dirs and ports.

Uses the ``etcd`` binary of Debian's ``etcd-server`` package (3.4), which
``scripts/bootstrap`` installs. Members get ports from 21000-29999 (never
etcd's default 2379/2380), their own data directory, short heartbeat and
election timeouts (so a leader loss heals in about a second), and an
environment without any ``ETCD_*`` variable (etcd reads each as a flag). Each
member dies with the test process (``setpriv --pdeathsig``), so none outlives it.

``shared(members)`` starts a cluster once per test session, for tests that
only need *an* etcd: each store they open lives under its own key prefix.

:func:`etcd_command`, :func:`etcd_environment` and :func:`status_of` are the one
launcher of an etcd member, used here and by ``bench/peers.py`` (which keeps etcd's
default timeouts and its own way of dying with its parent).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from etcd3aio._protobuf import MaintenanceStub, StatusRequest

from tests.ports import is_free

__all__ = [
    "EtcdCluster",
    "Member",
    "etcd_binary",
    "etcd_command",
    "etcd_environment",
    "shared",
    "status_of",
]


def etcd_binary() -> str:
    """The etcd binary's path.

    Raises:
        RuntimeError: etcd is not installed (``scripts/bootstrap`` installs it).
    """
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError(
            "etcd is not installed: run scripts/bootstrap (apt-get install etcd-server)"
        )
    return found


def etcd_command(
    binary: str,
    *,
    name: str,
    client_port: int,
    peer_port: int,
    cluster: str,
    token: str,
    data_dir: Path,
    state: str = "new",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of one etcd member on loopback, of the cluster ``cluster``
    (``name=peer-url,...``), logging to stderr; ``extra`` flags go after the rest.

    ``token`` is the same for every member of one cluster (it seeds the cluster's id)
    and differs between clusters.
    """
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        binary,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        "--initial-cluster-state", state,
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-outputs", "stderr",
        *extra,
    ]  # fmt: skip


def etcd_environment() -> dict[str, str]:
    """This process's environment without any ``ETCD*`` variable (etcd reads each as a flag)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}


def status_of(endpoint: str, timeout: float = 1.0) -> object | None:
    """The Maintenance.Status reply of the member at ``endpoint``, or None if it does not
    answer."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            reply: object = MaintenanceStub(channel).Status(StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
    return reply


def _with_parent() -> list[str]:
    """A prefix that makes the command die with this process (util-linux ``setpriv``).

    Not a ``preexec_fn``: Python code run between fork and exec aborts the child
    when gRPC threads are running in the parent, as they are in these tests.
    """
    found = shutil.which("setpriv")
    return [found, "--pdeathsig", "KILL"] if found else []


def _ports(count: int) -> list[int]:
    """``count`` distinct ports in 21000-29999 that are free right now."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(21000, 30000)
        if port not in chosen and is_free(port):
            chosen.append(port)
    return chosen


@dataclass
class Member:
    """One etcd member: its name, ports, data dir and process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` of its client URL."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    """A cluster of ``size`` members started by :meth:`start`, stopped by :meth:`stop`."""

    size: int
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="runguard-etcd-")))
    members: list[Member] = field(default_factory=list)
    _token: str = field(default_factory=lambda: f"rg-{os.getpid()}-{random.randrange(1 << 30)}")

    @property
    def endpoints(self) -> str:
        """Every member's client endpoint, comma-separated, as an ``etcd://`` URL takes them."""
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str = "runguard") -> str:
        """The store URL of this cluster, under a key prefix."""
        return f"etcd://{self.endpoints}/{prefix}"

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        """Start every member and wait until the cluster has a leader."""
        ports = _ports(2 * self.size)
        self.members = [
            Member(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self.root / f"m{i}",
                log=self.root / f"m{i}.log",
            )
            for i in range(self.size)
        ]
        for member in self.members:
            self._launch(member)
        self.wait_ready(timeout)
        return self

    def _launch(self, member: Member, *, state: str = "new") -> None:
        cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        command = etcd_command(
            etcd_binary(),
            name=member.name,
            client_port=member.client_port,
            peer_port=member.peer_port,
            cluster=cluster,
            token=self._token,
            data_dir=member.data_dir,
            state=state,
            # Short, so a leader loss heals in about a second.
            extra=("--heartbeat-interval", "50", "--election-timeout", "500"),
        )
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                [*_with_parent(), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=etcd_environment(),
            )

    def status(self, member: Member, timeout: float = 1.0) -> object | None:
        """The member's Maintenance.Status reply, or None if it does not answer."""
        return status_of(member.endpoint, timeout)

    def leader(self) -> Member | None:
        """The member that is leader now, if any running member knows one."""
        for member in self.members:
            if not member.running:
                continue
            reply = self.status(member)
            if reply is not None and reply.leader:  # type: ignore[attr-defined]
                for candidate in self.members:
                    got = self.status(candidate) if candidate.running else None
                    if got is not None and got.header.member_id == reply.leader:  # type: ignore[attr-defined]
                        return candidate
        return None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every running member answers and a leader exists.

        Raises:
            RuntimeError: not ready in time (the members' logs are in the message).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(
                        f"etcd {member.name} exited: {member.log.read_text()[-2000:]}"
                    )
            replies = [self.status(m) for m in self.members if m.running]
            if replies and all(r is not None and r.leader for r in replies):  # type: ignore[attr-defined]
                return
            time.sleep(0.1)
        logs = "\n".join(m.log.read_text()[-1000:] for m in self.members)
        raise RuntimeError(f"etcd cluster not ready in {timeout}s:\n{logs}")

    def kill(self, member: Member) -> None:
        """SIGKILL one member."""
        if member.process is not None:
            member.process.kill()
            member.process.wait(10)

    def restart(self, member: Member) -> None:
        """Start a killed member again on its data dir."""
        self._launch(member, state="existing")

    def stop(self) -> None:
        """Kill every member and remove the data dirs."""
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


_SHARED: dict[int, EtcdCluster] = {}


def shared(size: int) -> EtcdCluster:
    """A cluster of ``size`` members started on first use and stopped when the process exits."""
    if size not in _SHARED:
        cluster = EtcdCluster(size)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _SHARED[size] = cluster
        atexit.register(cluster.stop)
    return _SHARED[size]
