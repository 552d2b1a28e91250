"""The processes the bench measures: a RunGuard server, etcd and Redis, all on loopback.

Each runs in its own process group with its own data directory under the
run's scratch directory, on a port picked at random from 21000-29999 and
checked free (never etcd's 2379/2380 or Redis's 6379), and dies with the bench
(``PR_SET_PDEATHSIG``). etcd is launched by the tests' launcher
(``tests/etcd_harness.py``, imported when etcd starts, as etcd's client is a bench
extra), with etcd's default timeouts. A peer whose binary is missing is reported, not
dropped: :func:`start_etcd` and :func:`start_redis` return a :class:`Missing`.
:func:`start_etcd_cluster` starts several etcd members that form one cluster
(``--initial-cluster``); :func:`start_etcd` is its one-member case.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

__all__ = [
    "Missing",
    "Proc",
    "cpu_seconds",
    "filesystem_of",
    "rss_kib",
    "start_etcd",
    "start_etcd_cluster",
    "start_redis",
    "start_runguard",
    "version_of",
]

_PR_SET_PDEATHSIG = 1
REPO = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(taken: set[int]) -> int:
    for _ in range(1000):
        port = random.randrange(21000, 30000)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port in 21000-29999")


_TAKEN: set[int] = set()


@dataclass
class Proc:
    """A started process: what it is, where it listens, its pid and log."""

    name: str
    version: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The measured process's pid (for RSS and profiles)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def tail(self, chars: int = 2000) -> str:
        """The end of its log, for error messages."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


@dataclass(frozen=True)
class Missing:
    """A peer that could not be started, and why."""

    name: str
    reason: str


def version_of(binary: str, flag: str = "--version") -> str:
    """The first version-looking word a binary prints."""
    try:
        out = subprocess.run(
            [binary, flag], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "?"
    for word in out.replace("=", " ").split():
        if word[:1].isdigit() and "." in word:
            return word.rstrip(",")
    return "?"


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``...), from ``/proc/mounts``."""
    resolved, best, kind = str(path.resolve()), "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB, from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_runguard(
    scratch: Path, log_level: str, timeout: float = 30.0, extra: tuple[str, ...] = ()
) -> Proc:
    """The bench's RunGuard server (``python -m bench.server``) on a free loopback port.

    ``extra`` goes to it as arguments (``--store URL``, ``--capacity G=N``, ...).
    """
    log = scratch / f"runguard-{len(list(scratch.glob('runguard-*.log')))}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.server"),
                *("--listen", "127.0.0.1:0", "--log-level", log_level),
                *extra,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=sink,
            preexec_fn=_die_with_parent,  # only sets the death signal
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        if line.strip():
            break
    if not line.strip():
        process.kill()
        raise RuntimeError(f"the RunGuard bench server did not start:\n{log.read_text()[-2000:]}")
    info = json.loads(line)
    return Proc("RunGuard", version("runguard"), f"127.0.0.1:{info['port']}", process, log)


def _wait(check: Callable[[], bool], proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        if check():
            return
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{proc.tail()}")


def _launch_etcd(
    binary: str, name: str, ports: tuple[int, int], cluster: str, data_dir: Path, log: Path
) -> Proc:
    """One etcd member (not yet ready) of the cluster ``cluster`` (``name=peer-url,...``)."""
    from tests import etcd_harness

    client_port, peer_port = ports
    command = etcd_harness.etcd_command(
        binary,
        name=name,
        client_port=client_port,
        peer_port=peer_port,
        cluster=cluster,
        token=f"bench-{os.getpid()}-{cluster.split(',')[0]}",
        data_dir=data_dir,
        extra=("--log-level", "warn"),
    )
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=etcd_harness.etcd_environment(),
            preexec_fn=_die_with_parent,  # only sets the death signal
        )
    return Proc("etcd", version_of(binary), f"127.0.0.1:{client_port}", process, log)


def _has_leader(address: str) -> bool:
    from tests import etcd_harness

    reply = etcd_harness.status_of(address)
    return reply is not None and bool(reply.leader)  # type: ignore[attr-defined]


def start_etcd_cluster(
    scratch: Path, data_root: Path, members: int, timeout: float = 30.0
) -> list[Proc] | Missing:
    """``members`` etcd 3.4 members on loopback forming one cluster (``--initial-cluster``).

    Each has its own ports, data dir under ``data_root`` and log; etcd's default
    heartbeat and election timeouts. Returns once every member knows a leader.
    """
    binary = shutil.which("etcd")
    if binary is None:
        return Missing("etcd", "no etcd binary: apt-get install etcd-server")
    tag = "bench" if members == 1 else f"bench{members}"
    names = [tag if members == 1 else f"{tag}-m{i}" for i in range(members)]
    ports = [(_free_port(_TAKEN), _free_port(_TAKEN)) for _ in names]
    cluster = ",".join(
        f"{name}=http://127.0.0.1:{peer}" for name, (_, peer) in zip(names, ports, strict=True)
    )
    procs: list[Proc] = []
    try:
        for name, pair in zip(names, ports, strict=True):
            data_dir = data_root / ("etcd-data" if members == 1 else f"etcd-{name}")
            log = scratch / ("etcd.log" if members == 1 else f"etcd-{name}.log")
            procs.append(_launch_etcd(binary, name, pair, cluster, data_dir, log))
        for proc in procs:
            _wait(functools.partial(_has_leader, proc.address), proc, timeout)
    except RuntimeError:
        for proc in procs:
            proc.stop()
        raise
    return procs


def start_etcd(scratch: Path, data_root: Path, timeout: float = 30.0) -> Proc | Missing:
    """A one-member etcd 3.4 on loopback, its data dir under ``data_root``."""
    started = start_etcd_cluster(scratch, data_root, 1, timeout)
    return started if isinstance(started, Missing) else started[0]


def start_redis(scratch: Path, data_root: Path, timeout: float = 30.0) -> Proc | Missing:
    """A Redis on loopback without persistence (no RDB snapshots, no AOF)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return Missing("Redis", "no redis-server binary: apt-get install redis-server")
    port = _free_port(_TAKEN)
    data_dir = data_root / "redis-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = scratch / "redis.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--protected-mode", "yes",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(data_dir),
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only sets the death signal
        )  # fmt: skip
    proc = Proc("Redis", version_of(binary), f"127.0.0.1:{port}", process, log)

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait(ready, proc, timeout)
    return proc
