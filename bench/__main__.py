"""``python -m bench`` (``bench/run``): every phase, then one table and the targets.

Phases, in this order, on one machine:

1. load on one RunGuard server: the no-op ceiling, Begin+End on distinct
   guards, etcd Lock/Unlock and Redis SET NX PX on distinct keys, each with 1
   and with ``--in-flight`` calls in flight; then the contended hand-off of
   RunGuard, etcd and Redis (``--contended`` workers on one guard / key);
   interleaved with them, Begin+End through a second RunGuard server whose
   store is the bench's etcd (``--store etcd://…``), next to etcd's own
   Lock/Unlock; through a third whose store is a sqlite file with
   synchronous=FULL on a real disk (``/var/tmp`` or ``--sqlite-dir``); the
   streaming ceiling (request/response messages pipelined on one
   bidirectional stream per client process, the bench server's ``Exchange``);
   then, on a ``--cluster-members`` etcd cluster started for them, etcd's
   Lock/Unlock and Begin+End through a fourth RunGuard server on that
   cluster, both with ``--in-flight`` on distinct keys and contended;
2. Watch fan-out for each ``--watchers`` count: the ceiling (a no-op
   broadcast to idle streams) and RunGuard, each on a fresh server (so its
   memory before the watchers is a clean baseline), then etcd's watch of one
   key with the same count;
3. the history check: ``--history-replicas`` RunGuard servers on one
   ``etcd://`` prefix of the bench's etcd, ``--history-clients`` clients
   recording every Begin/End/expiry outcome for ``--history-seconds``, the
   whole history judged by ``tests/history.py``'s checker (``bench/history.py``).

Progress goes to stderr, the table to stdout: every row, then every target of
issue 12 as met / not met with its measured ratio, the new rows' ratios for
information, issue 4's remaining targets and the history check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import report
from bench.fanout import FanoutResult, FanoutSpec, run_fanout
from bench.history import CAPACITIES, DEDUP_WINDOW, HistoryResult, run_history
from bench.load import LoadResult, LoadSpec, check_shared_clock, run_load
from bench.peers import (
    Missing,
    Proc,
    filesystem_of,
    start_etcd,
    start_etcd_cluster,
    start_redis,
    start_runguard,
)
from bench.profiling import Profiler, summarize
from bench.report import Report, Target, pair_cell, percentile, rate_cell, rate_of, ratio


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="RunGuard against its ceiling (a no-op RPC on the same server), "
        "etcd and Redis; prints one table of ratios measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 1-2 minute smoke run with small sizes"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per load row (5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each row (1)")
    parser.add_argument(
        "--clients", type=int, default=4, help="client processes for the multi-call rows (4)"
    )
    parser.add_argument("--in-flight", type=int, default=32, help="calls in flight (32)")
    parser.add_argument(
        "--contended", type=int, default=32, help="workers on the one contended guard (32)"
    )
    parser.add_argument(
        "--watchers",
        help="comma-separated watcher counts (1000,10000; --quick: 100,1000)",
    )
    parser.add_argument(
        "--watch-processes", type=int, default=4, help="processes holding the watchers (4)"
    )
    parser.add_argument(
        "--per-connection", type=int, default=100, help="Watch streams per connection (100)"
    )
    parser.add_argument("--rounds", type=int, help="fan-out rounds per count (100; --quick: 10)")
    parser.add_argument(
        "--fanout-budget", type=float, help="most seconds of rounds per fan-out row (120)"
    )
    parser.add_argument(
        "--history-seconds",
        type=float,
        help="seconds of recorded history across the replicas (45; --quick: 3)",
    )
    parser.add_argument(
        "--history-replicas",
        type=int,
        help="RunGuard replicas on one etcd (3; --quick: 2)",
    )
    parser.add_argument(
        "--history-clients", type=int, default=24, help="clients recording the history (24)"
    )
    parser.add_argument(
        "--redis-retry",
        type=float,
        default=0.001,
        help="seconds between SET NX attempts on a taken Redis lock (0.001)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to leave out: etcd, redis, load, fanout, history, "
        "sqlite (the sqlite:// row), etcd3 (the N-member etcd rows), stream (the stream ceiling)",
    )
    parser.add_argument(
        "--cluster-members",
        type=int,
        default=3,
        help="members of the etcd cluster of the 'on N-member etcd://' rows (3)",
    )
    parser.add_argument(
        "--sqlite-dir",
        type=Path,
        help="where the sqlite:// row's database file goes; it should be a real disk, not "
        "a tmpfs, since its fsyncs are the point (default: a new dir under /var/tmp)",
    )
    parser.add_argument(
        "--server-log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="the RunGuard server's log level (info, as runguard serve)",
    )
    parser.add_argument(
        "--peer-data-dir",
        type=Path,
        help="where etcd and Redis keep data (default: a tmpfs if the machine has "
        "one, so etcd's fsyncs cost no disk time; else the temp dir)",
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the server here")
    parser.add_argument("--json", type=Path, help="also write every raw result here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    return parser


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tmpfs_root() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[1] == "/dev/shm" and parts[2] == "tmpfs":
                return Path(parts[1])
    return None


def _disk_tmp() -> Path | None:
    """/var/tmp, the temp dir meant to be on disk (FHS), when there is one."""
    path = Path("/var/tmp")
    return path if path.is_dir() and os.access(path, os.W_OK) else None


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def _busy(loadavg: str) -> bool:
    try:
        return float(loadavg.split()[0]) > 1.0
    except (ValueError, IndexError):
        return False


class Bench:
    """One run: its settings, the processes it started and what it measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        quick = args.quick
        self.duration = args.duration or (1.5 if quick else 5.0)
        self.warmup = args.warmup or (0.5 if quick else 1.0)
        self.watchers = [
            int(n) for n in (args.watchers or ("100,1000" if quick else "1000,10000")).split(",")
        ]
        self.rounds = args.rounds or (10 if quick else 100)
        self.budget = args.fanout_budget or (30.0 if quick else 120.0)
        self.history_seconds = args.history_seconds or (3.0 if quick else 45.0)
        self.history_replicas = args.history_replicas or (2 if quick else 3)
        self.history: HistoryResult | None = None
        self.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        self.scratch = Path(tempfile.mkdtemp(prefix="runguard-bench-"))
        data_parent = args.peer_data_dir or _tmpfs_root()
        self.data_root = Path(tempfile.mkdtemp(prefix="runguard-bench-data-", dir=data_parent))
        self.sqlite_dir = Path(
            tempfile.mkdtemp(prefix="runguard-bench-sqlite-", dir=args.sqlite_dir or _disk_tmp())
        )
        self.profiler = Profiler(args.profile)
        self.peers: dict[str, Proc | Missing | None] = {"etcd": None, "redis": None}
        self.started: list[Proc] = []
        self.load: dict[str, LoadResult | None] = {}
        self.fanout: dict[tuple[str, int], FanoutResult | None] = {}
        self.versions: dict[str, str] = {}
        self.clock_ok = False
        self.load_start = "?"
        self.failures: list[str] = []

    # -- processes ----------------------------------------------------------

    def _runguard(self, *extra: str) -> Proc:
        proc = start_runguard(self.scratch, self.args.server_log_level, extra=extra)
        self.started.append(proc)
        self.versions["runguard"] = proc.version
        return proc

    def _start_peers(self) -> None:
        for name, start in (("etcd", start_etcd), ("redis", start_redis)):
            if name in self.skip:
                continue
            _say(f"starting {name}")
            try:
                peer = start(self.scratch, self.data_root)
            except RuntimeError as error:
                peer = Missing(name, str(error).splitlines()[0])
            self.peers[name] = peer
            if isinstance(peer, Proc):
                self.started.append(peer)
                self.versions[name] = peer.version
                _say(f"{name} {peer.version} on {peer.address}")
            else:
                _say(f"{name} MISSING: {peer.reason}")

    def _peer(self, name: str) -> Proc | None:
        peer = self.peers.get(name)
        return peer if isinstance(peer, Proc) else None

    def close(self) -> None:
        """Stop everything this run started; drop the scratch dir unless told to keep it."""
        self.profiler.stop()
        for proc in reversed(self.started):
            proc.stop()
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.sqlite_dir, ignore_errors=True)
        if self.args.keep or self.failures:
            _say(f"logs kept in {self.scratch}")
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- phases ---------------------------------------------------------------

    def _hooks(
        self, pid: int | None, phase: str
    ) -> tuple[Callable[[], None], Callable[[], None]] | None:
        if pid is None or not self.profiler.enabled:
            return None
        return (lambda: self.profiler.start(pid, phase), self.profiler.stop)

    def _load(
        self,
        key: str,
        system: str,
        target: Proc | list[Proc],
        in_flight: int,
        contended: bool,
        pid: int | None,
        processes: int | None = None,
    ) -> None:
        procs = target if isinstance(target, list) else [target]
        address = ",".join(p.address for p in procs)
        spec = LoadSpec(
            system=system,
            address=address,
            in_flight=in_flight,
            processes=processes or (1 if in_flight == 1 else self.args.clients),
            contended=contended,
            tag=key,
            warmup=self.warmup,
            duration=self.duration,
            extra={"retry_delay": self.args.redis_retry} if system == "redis" else {},
            pid=procs[0].pid,
            more_pids=tuple(p.pid for p in procs[1:]),
        )
        try:
            result = run_load(spec, self._hooks(pid, key))
        except (RuntimeError, TimeoutError, OSError) as error:
            self.failures.append(f"{key}: {error}")
            _say(f"{key} FAILED: {error}")
            self.load[key] = None
            return
        self.load[key] = result
        extra = ""
        if result.handoff_ns:
            extra = f", hand-off p50/p99 {report.pair_cell(result.handoff_ns)} ms"
        if result.out_of_order:
            extra += f", {result.out_of_order} OUT OF ORDER"
            self.failures.append(f"{key}: {result.out_of_order} grants without a release")
        cpu = result.cpu_us_per_cycle
        if cpu is not None:
            extra += f", server CPU {cpu:.0f} us/cycle"
        _say(f"{key}: {result.rate:,.0f}/s ({result.processes} client processes){extra}")

    def _start_cluster(self) -> list[Proc] | None:
        """The ``--cluster-members`` etcd cluster of the 'on N-member etcd://' rows."""
        if not self._cluster_wanted or self._peer("etcd") is None:
            return None
        members = self.args.cluster_members
        _say(f"starting a {members}-member etcd cluster")
        try:
            started = start_etcd_cluster(self.scratch, self.data_root, members)
        except RuntimeError as error:
            started = Missing("etcd", str(error).splitlines()[0])
        if isinstance(started, Missing):
            self.failures.append(f"{members}-member etcd: {started.reason}")
            _say(f"{members}-member etcd FAILED: {started.reason}")
            return None
        self.started.extend(started)
        _say(f"{members}-member etcd on {', '.join(m.address for m in started)}")
        return started

    def run_load_phases(self) -> None:
        """Every load row, ceiling first, systems interleaved so drift hits all alike."""
        server = self._runguard()
        _say(f"RunGuard bench server on {server.address} (pid {server.pid})")
        etcd, redis = self._peer("etcd"), self._peer("redis")
        on_etcd: Proc | None = None
        if etcd is not None:
            on_etcd = self._runguard("--store", f"etcd://{etcd.address}/bench-load")
            _say(f"RunGuard on etcd:// server on {on_etcd.address} (pid {on_etcd.pid})")
        on_sqlite: Proc | None = None
        if "sqlite" not in self.skip:
            self.sqlite_dir.mkdir(parents=True, exist_ok=True)
            on_sqlite = self._runguard("--store", f"sqlite://{self.sqlite_dir / 'bench.db'}")
            _say(
                f"RunGuard on sqlite:// server on {on_sqlite.address} (pid {on_sqlite.pid}), "
                f"file in {self.sqlite_dir} ({filesystem_of(self.sqlite_dir)})"
            )
        cluster = self._start_cluster()
        on_cluster: Proc | None = None
        if cluster is not None:
            endpoints = ",".join(m.address for m in cluster)
            on_cluster = self._runguard("--store", f"etcd://{endpoints}/bench-load")
            _say(f"RunGuard on {len(cluster)}-member etcd:// on {on_cluster.address}")
        stream = None if "stream" in self.skip else server
        n, c = self.args.in_flight, self.args.contended
        plan: list[tuple[str, str, Proc | list[Proc] | None, int, bool, int | None]] = [
            ("noop-1", "noop", server, 1, False, None),
            ("runguard-1", "runguard", server, 1, False, None),
            ("etcd-1", "etcd", etcd, 1, False, None),
            ("redis-1", "redis", redis, 1, False, None),
            (f"noop-{n}", "noop", server, n, False, None),
            (f"stream1-{n}", "stream", stream, n, False, 1),
            (f"runguard-{n}", "runguard", server, n, False, None),
            (f"etcd-{n}", "etcd", etcd, n, False, None),
            (f"rgetcd-{n}", "runguard", on_etcd, n, False, None),
            (f"rgsqlite-{n}", "runguard", on_sqlite, n, False, None),
            (f"redis-{n}", "redis", redis, n, False, None),
            (f"stream-{n}", "stream", stream, n, False, None),
            ("runguard-contended", "runguard", server, c, True, None),
            ("etcd-contended", "etcd", etcd, c, True, None),
            ("rgetcd-contended", "runguard", on_etcd, c, True, None),
            ("redis-contended", "redis", redis, c, True, None),
            (f"etcd3-{n}", "etcd", cluster, n, False, None),
            (f"rgetcd3-{n}", "runguard", on_cluster, n, False, None),
            ("etcd3-contended", "etcd", cluster, c, True, None),
            ("rgetcd3-contended", "runguard", on_cluster, c, True, None),
        ]
        ours = [p for p in (server, on_etcd, on_sqlite, on_cluster) if p is not None]
        for key, system, target, in_flight, contended, processes in plan:
            if target is None:
                self.load[key] = None
                continue
            mine = isinstance(target, Proc) and any(target is p for p in ours)
            pid = target.pid if mine and isinstance(target, Proc) else None
            self._load(key, system, target, in_flight, contended, pid, processes)
            for alive in ours:
                if not alive.alive():
                    raise RuntimeError(f"a RunGuard server died:\n{alive.tail()}")
        for proc in ours:
            proc.stop()
        for member in cluster or []:
            member.stop()

    def run_history_phase(self) -> None:
        """Replicas on one etcd prefix, many clients, the whole history checked."""
        etcd = self._peer("etcd")
        if etcd is None:
            return
        prefix = f"bench-history-{uuid.uuid4().hex[:8]}"
        extra = ["--store", f"etcd://{etcd.address}/{prefix}"]
        extra += ["--dedup-window", f"{DEDUP_WINDOW:g}"]
        for guard, slots in CAPACITIES.items():
            extra += ["--capacity", f"{guard}={slots}"]
        try:
            replicas = [self._runguard(*extra) for _ in range(self.history_replicas)]
            _say(
                f"history: {len(replicas)} replicas on etcd://{etcd.address}/{prefix}, "
                f"{self.args.history_clients} clients for {self.history_seconds:g} s"
            )
            result = run_history(
                [r.address for r in replicas], self.args.history_clients, self.history_seconds
            )
        except (RuntimeError, OSError) as error:
            self.failures.append(f"history check: {error}")
            _say(f"history check FAILED: {error}")
            return
        for replica in replicas:
            if not replica.alive():
                result.violations.append(f"replica {replica.address} died:\n{replica.tail()}")
            replica.stop()
        self.history = result
        _say(f"history: {result.summary()}")
        if result.violations:
            self.failures.append(f"history check: {len(result.violations)} violations")

    def _fanout(self, system: str, proc: Proc, watchers: int) -> None:
        key = f"{system}-fanout-{watchers}"
        spec = FanoutSpec(
            system=system,
            address=proc.address,
            pid=proc.pid,
            watchers=watchers,
            processes=self.args.watch_processes,
            per_connection=self.args.per_connection,
            rounds=self.rounds,
            warmup_rounds=2,
            budget=self.budget,
            tag=f"bench/fanout-{watchers}" if system == "etcd" else f"fanout-{watchers}",
        )
        pid = proc.pid if system != "etcd" else None
        try:
            result = run_fanout(spec, self._hooks(pid, key))
        except (RuntimeError, TimeoutError, OSError) as error:
            self.failures.append(f"{key}: {error}")
            _say(f"{key} FAILED: {error}")
            self.fanout[system, watchers] = None
            return
        self.fanout[system, watchers] = result
        _say(
            f"{key}: opened in {result.open_seconds:.1f}s, {result.rounds} rounds, "
            f"release->last p50/p99 {report.pair_cell(result.last_ns)} ms, "
            f"{result.kib_per_watcher:.1f} KiB/watcher, "
            f"server CPU {result.cpu_us_per_delivery:.1f} us/delivery"
        )

    def run_fanout_phases(self) -> None:
        """Each watcher count: the ceiling and RunGuard, each on a fresh server, then etcd."""
        for watchers in self.watchers:
            for system in ("noop", "runguard"):
                server = self._runguard()
                _say(f"fan-out {watchers:,} ({system}): fresh server (pid {server.pid})")
                time.sleep(1.0)  # let its start-up allocations settle before the baseline
                self._fanout(system, server, watchers)
                server.stop()
            etcd = self._peer("etcd")
            if etcd is not None:
                self._fanout("etcd", etcd, watchers)
            else:
                self.fanout["etcd", watchers] = None

    # -- the report -------------------------------------------------------------

    def _absent(self, name: str) -> str:
        peer = self.peers.get(name)
        if name in self.skip:
            return "skipped"
        return f"MISSING ({peer.reason})" if isinstance(peer, Missing) else "did not run"

    def _peer_text(self, name: str, text: str) -> str:
        if name in self.skip:
            return "skipped"
        if isinstance(self.peers.get(name), Missing):
            return "missing"
        return text

    def _peer_cell(self, name: str, result: LoadResult | None) -> str:
        if name in self.skip:
            return "skipped"
        if isinstance(self.peers.get(name), Missing):
            return "missing"
        return rate_cell(result)

    @property
    def _cluster_wanted(self) -> bool:
        return not {"etcd", "etcd3", "load"} & self.skip

    def _cluster_text(self, text: str) -> str:
        return self._peer_text("etcd", text)

    def _cluster_cell(self, result: LoadResult | None) -> str:
        return self._cluster_text(rate_cell(result))

    def build(self) -> Report:
        """The table and the targets."""
        a = self.args
        n = a.in_flight
        m = a.cluster_members
        out = Report()
        cores = os.cpu_count()
        etcd, redis = self.peers["etcd"], self.peers["redis"]
        etcd_text = (
            f"{etcd.version}: one member, v3lock Lock/Unlock, one lease per worker"
            + ("; data on tmpfs" if a.peer_data_dir is None and _tmpfs_root() else "")
            if isinstance(etcd, Proc)
            else self._absent("etcd")
        )
        redis_text = (
            f"{redis.version}: no persistence, SET NX PX + compare-and-delete (Lua), "
            f"retry every {a.redis_retry * 1000:g} ms"
            if isinstance(redis, Proc)
            else self._absent("redis")
        )
        fs = filesystem_of(self.sqlite_dir)
        sqlite_text = (
            f"a further server, --store sqlite://{self.sqlite_dir}/bench.db (synchronous="
            f"FULL, the default: an fsync per commit); the file on {fs}, "
            + ("--sqlite-dir" if a.sqlite_dir else "under /var/tmp")
            + (": a TMPFS, so its fsyncs cost nothing!" if fs == "tmpfs" else ", a real disk")
        )
        out.header = [
            "RunGuard benchmarks"
            + (" (--quick: small sizes, a smoke run)" if a.quick else "")
            + f": {cores} CPU cores shared by every process below, loopback only",
            f"  RunGuard {self.versions.get('runguard', '?')}: one server process, memory:// "
            f"store, log level {a.server_log_level}; ceilings on the same grpc.aio server; "
            "'on etcd://' rows: a second server whose store is the etcd below",
            f"  etcd {etcd_text}",
            f"  Redis {redis_text}",
            f"  load: closed loop from {a.clients} spawned client processes "
            f"({n} in flight; 1 process for 1 in flight); {self.warmup:g} s warm-up + "
            f"{self.duration:g} s measured per row; raw grpc.aio stubs for every gRPC system",
            "" if "sqlite" in self.skip else f"  'on sqlite://' rows: {sqlite_text}",
            "" if not self._cluster_wanted else
            f"  'on {m}-member etcd://' rows: a further server whose store is a {m}-member etcd "
            f"cluster ({m} etcd processes on loopback, --initial-cluster, default heartbeat and "
            "election timeouts, data where the one-member etcd's is); its store gets every "
            f"member's endpoint (round robin); etcd's own Lock/Unlock client process i talks to "
            f"member i mod {m}; etcd CPU: the {m} members' summed",
            "" if "stream" in self.skip else
            f"  stream ceiling: bench-only Exchange, a bidirectional stream on the same grpc.aio "
            "server answering each request message with one response; each client process "
            f"opens ONE stream and its workers pipeline their messages on it ('ONE stream': 1 "
            f"process with all {n} in flight; 'a stream per client': {a.clients} processes, "
            f"{a.clients} streams)",
            f"  fan-out: watchers in {a.watch_processes} spawned processes, {a.per_connection} "
            f"streams per connection, {self.rounds} rounds (+2 warm-up) or {self.budget:g} s",
            "  clock: time.monotonic_ns (CLOCK_MONOTONIC), "
            + ("checked shared by all processes" if self.clock_ok else "NOT shown shared!"),
            f"  load average at start/end: {self.load_start} / {_loadavg()}"
            + (
                " (BUSY: other processes competed for the cores; compare ratios only)"
                if _busy(self.load_start)
                else ""
            ),
        ]  # fmt: skip
        out.header = [line for line in out.header if line]  # the skipped parts' lines are ""
        runs = self.load
        noop1, noopn = rate_of(runs.get("noop-1")), rate_of(runs.get(f"noop-{n}"))
        rg1, rgn = rate_of(runs.get("runguard-1")), rate_of(runs.get(f"runguard-{n}"))
        et1, etn = rate_of(runs.get("etcd-1")), rate_of(runs.get(f"etcd-{n}"))
        rgc, etc_ = rate_of(runs.get("runguard-contended")), rate_of(runs.get("etcd-contended"))
        half1 = None if noop1 is None else noop1 / 2
        halfn = None if noopn is None else noopn / 2
        first_load_row = len(out.rows)
        out.row("no-op unary RPCs/s, 1 in flight", ceiling=rate_cell(runs.get("noop-1")))
        out.row(f"no-op unary RPCs/s, {n} in flight", ceiling=rate_cell(runs.get(f"noop-{n}")))
        for flight, rg, et, half in ((1, rg1, et1, half1), (n, rgn, etn, halfn)):
            out.row(
                f"acquire+release cycles/s, {flight} in flight, distinct",
                ceiling=report.rate_text(half),
                runguard=rate_cell(runs.get(f"runguard-{flight}")),
                etcd=self._peer_cell("etcd", runs.get(f"etcd-{flight}")),
                redis=self._peer_cell("redis", runs.get(f"redis-{flight}")),
                vs_ceiling=ratio(rg, half),
                vs_etcd=ratio(rg, et),
            )
        cpu = {k: None if r is None else r.cpu_us_per_cycle for k, r in runs.items()}
        noop_cpu = cpu.get(f"noop-{n}")
        cycle_floor = None if noop_cpu is None else 2 * noop_cpu
        out.row(
            f"  server CPU per cycle, {n} in flight, us",
            ceiling=report.us_text(cycle_floor),
            runguard=report.us_text(cpu.get(f"runguard-{n}")),
            etcd=self._peer_text("etcd", report.us_text(cpu.get(f"etcd-{n}"))),
            redis=self._peer_text("redis", report.us_text(cpu.get(f"redis-{n}"))),
            vs_ceiling=ratio(cpu.get(f"runguard-{n}"), cycle_floor),
            vs_etcd=ratio(cpu.get(f"runguard-{n}"), cpu.get(f"etcd-{n}")),
        )
        if "sqlite" not in self.skip:
            rgsq = rate_of(runs.get(f"rgsqlite-{n}"))
            out.row(
                f"Begin+End through RunGuard on sqlite://, {n} in flight, distinct",
                ceiling=report.rate_text(halfn),
                runguard=rate_cell(runs.get(f"rgsqlite-{n}")),
                etcd=self._peer_cell("etcd", runs.get(f"etcd-{n}")),
                vs_ceiling=ratio(rgsq, halfn),
                vs_etcd=ratio(rgsq, etn),
            )
            out.row(
                "  server CPU per cycle, us",
                ceiling=report.us_text(cycle_floor),
                runguard=report.us_text(cpu.get(f"rgsqlite-{n}")),
                etcd=self._peer_text("etcd", report.us_text(cpu.get(f"etcd-{n}"))),
                vs_ceiling=ratio(cpu.get(f"rgsqlite-{n}"), cycle_floor),
                vs_etcd=ratio(cpu.get(f"rgsqlite-{n}"), cpu.get(f"etcd-{n}")),
            )
        streams = ((f"stream1-{n}", "ONE stream"), (f"stream-{n}", "a stream per client"))
        for key, label in [] if "stream" in self.skip else streams:
            out.row(
                f"streamed request/response msgs/s, {n} in flight, {label}",
                ceiling=rate_cell(runs.get(key)),
            )
            out.row("  server CPU per message, us", ceiling=report.us_text(cpu.get(key)))
        out.row(
            f"contended hand-off cycles/s, {a.contended} on one",
            runguard=rate_cell(runs.get("runguard-contended")),
            etcd=self._peer_cell("etcd", runs.get("etcd-contended")),
            redis=self._peer_cell("redis", runs.get("redis-contended")),
            vs_etcd=ratio(rgc, etc_),
        )

        def handoff(key: str, peer: str | None = None) -> str:
            if peer is not None and self._peer(peer) is None:
                return self._peer_cell(peer, None)
            result = runs.get(key)
            return pair_cell(result.handoff_ns if result else None)

        out.row(
            "  release -> next grant, p50 / p99 ms",
            runguard=handoff("runguard-contended"),
            etcd=handoff("etcd-contended", "etcd"),
            redis=handoff("redis-contended", "redis"),
        )
        out.row(
            "  server CPU per cycle, contended, us",
            runguard=report.us_text(cpu.get("runguard-contended")),
            etcd=self._peer_text("etcd", report.us_text(cpu.get("etcd-contended"))),
            redis=self._peer_text("redis", report.us_text(cpu.get("redis-contended"))),
            vs_etcd=ratio(cpu.get("runguard-contended"), cpu.get("etcd-contended")),
        )
        rg_on = {k: rate_of(runs.get(f"rgetcd-{k}")) for k in (str(n), "contended")}
        et_on = {str(n): etn, "contended": etc_}
        for k, label in (
            (str(n), f"{n} in flight, distinct"),
            ("contended", f"{a.contended} on one"),
        ):
            out.row(
                f"Begin+End through RunGuard on etcd://, {label}",
                runguard=self._peer_cell("etcd", runs.get(f"rgetcd-{k}")),
                etcd=self._peer_cell("etcd", runs.get(f"etcd-{k}")),
                vs_etcd=ratio(rg_on[k], et_on[k]),
            )
            out.row(
                "  server CPU per cycle, us (RunGuard's process only)",
                runguard=self._peer_text("etcd", report.us_text(cpu.get(f"rgetcd-{k}"))),
                etcd=self._peer_text("etcd", report.us_text(cpu.get(f"etcd-{k}"))),
                vs_etcd=ratio(cpu.get(f"rgetcd-{k}"), cpu.get(f"etcd-{k}")),
            )
        rg3 = {k: rate_of(runs.get(f"rgetcd3-{k}")) for k in (str(n), "contended")}
        et3 = {k: rate_of(runs.get(f"etcd3-{k}")) for k in (str(n), "contended")}
        for k, label in (
            (
                (str(n), f"{n} in flight, distinct"),
                ("contended", f"{a.contended} on one"),
            )
            if self._cluster_wanted
            else ()
        ):
            out.row(
                f"Begin+End through RunGuard on {m}-member etcd://, {label}",
                runguard=self._cluster_cell(runs.get(f"rgetcd3-{k}")),
                etcd=self._cluster_cell(runs.get(f"etcd3-{k}")),
                vs_etcd=ratio(rg3[k], et3[k]),
            )
            if k == "contended":
                out.row(
                    "  release -> next grant, p50 / p99 ms",
                    runguard=self._cluster_text(handoff("rgetcd3-contended")),
                    etcd=self._cluster_text(handoff("etcd3-contended")),
                )
            out.row(
                f"  server CPU per cycle, us (RunGuard's process; etcd's {m} members)",
                runguard=self._cluster_text(report.us_text(cpu.get(f"rgetcd3-{k}"))),
                etcd=self._cluster_text(report.us_text(cpu.get(f"etcd3-{k}"))),
                vs_etcd=ratio(cpu.get(f"rgetcd3-{k}"), cpu.get(f"etcd3-{k}")),
            )
        if "load" in self.skip:
            del out.rows[first_load_row:]
        for watchers in [] if "fanout" in self.skip else self.watchers:
            (noop_fan, runguard_fan, etcd_fan), p99, kib = self._fanout_at(watchers)
            out.row(
                f"fan-out to {watchers:,}: release -> last watcher, p50 / p99 ms",
                ceiling=pair_cell(noop_fan.last_ns if noop_fan else None),
                runguard=pair_cell(runguard_fan.last_ns if runguard_fan else None),
                etcd=pair_cell(etcd_fan.last_ns if etcd_fan else None)
                if self._peer("etcd")
                else self._peer_cell("etcd", None),
                vs_ceiling=ratio(p99[1], p99[0]),
                vs_etcd=ratio(p99[1], p99[2]),
            )
            us = [
                None if r is None else r.cpu_us_per_delivery
                for r in (noop_fan, runguard_fan, etcd_fan)
            ]
            out.row(
                "  server CPU per change per watcher, us",
                ceiling=report.us_text(us[0]),
                runguard=report.us_text(us[1]),
                etcd=self._peer_text("etcd", report.us_text(us[2])),
                vs_ceiling=ratio(us[1], us[0]),
                vs_etcd=ratio(us[1], us[2]),
            )
            out.row(
                "  server memory per watcher, KiB",
                ceiling=report.kib_text(kib[0]),
                runguard=report.kib_text(kib[1]),
                etcd=report.kib_text(kib[2]),
                vs_ceiling=ratio(kib[1], kib[0]),
                vs_etcd=ratio(kib[1], kib[2]),
            )
        out.footnotes = [
            "ceiling: the same grpc.aio server with no RunGuard logic: for cycles, half the "
            "no-op RPC rate (a cycle is two calls);",
            "  for fan-out, a broadcast of raw bytes to idle server streams (one shared "
            "future, no per-watcher state).",
            "RG/ceiling and RG/etcd: RunGuard's figure over theirs (rates: higher is better; "
            "fan-out: ratio of the p99s and of memory, lower is better).",
        ]

        out.targets = self._targets()
        history = self.history
        if history is not None:
            out.notes.append(
                f"history check ({history.replicas} RunGuard replicas on one etcd://, "
                "tests/history.py's checker):"
            )
            out.notes.append(f"  {history.summary()}")
            out.notes.extend(f"  {v}" for v in history.violations[:20])
        elif "history" not in self.skip:
            out.notes.append(f"history check: {self._absent('etcd')}")
        if self.failures:
            out.notes.append("FAILURES (rows shown '-'):")
            out.notes.extend(f"  {f}" for f in self.failures)
        if self.profiler.written:
            out.notes.append("profiles of the RunGuard server (py-spy, busy samples only):")
            for path in self.profiler.written:
                out.notes.extend(f"  {line}" for line in summarize(path))
        return out

    def _fanout_at(
        self, watchers: int
    ) -> tuple[list[FanoutResult | None], list[float | None], list[float | None]]:
        """The ceiling's, RunGuard's and etcd's fan-out to ``watchers``: the results, the
        p99 of release -> last watcher and the memory per watcher (None where one did not run)."""
        results = [self.fanout.get((s, watchers)) for s in ("noop", "runguard", "etcd")]
        p99 = [None if r is None else percentile(r.last_ns, 99) for r in results]
        kib = [None if r is None else r.kib_per_watcher for r in results]
        return results, p99, kib

    def _targets(self) -> list[tuple[str, list[Target]]]:
        """Issue 12's targets (met / not met), the new rows' ratios (info), issue 4's."""
        a, n, runs = self.args, self.args.in_flight, self.load
        m = a.cluster_members

        def rate(key: str) -> float | None:
            return rate_of(runs.get(key))

        def cpu(key: str) -> float | None:
            result = runs.get(key)
            return None if result is None else result.cpu_us_per_cycle

        def target(text: str, value: float | None, goal: str, note: str = "") -> Target:
            op, bound = goal.split()
            met = None
            if value is not None:
                met = value >= float(bound) if op == ">=" else value <= float(bound)
            return Target(text, value, goal, met, note)

        def missing(*keys: str) -> str:
            gone = [k for k in keys if runs.get(k) is None]
            if "load" in self.skip or (
                any(k.startswith("rgsqlite") for k in gone) and "sqlite" in self.skip
            ):
                return "skipped (--skip)"
            return f"did not run: {', '.join(gone)}" if gone else ""

        noop1, noopn = rate("noop-1"), rate(f"noop-{n}")
        half1 = None if noop1 is None else noop1 / 2
        halfn = None if noopn is None else noopn / 2
        etc_ = rate("etcd-contended")
        biggest = max(self.watchers)
        (ce, rg, _), p99, kib = self._fanout_at(biggest)
        size = "" if biggest >= 10_000 else f"at {biggest:,} watchers, not the issue's 10,000"
        fan_gone = (
            ""
            if rg is not None and ce is not None
            else "skipped (--skip)"
            if "fanout" in self.skip
            else "fan-out did not run"
        )
        issue12 = [
            target(
                f"Begin+End, {n} in flight, distinct: RunGuard on etcd:// / on memory://",
                ratio(rate(f"rgetcd-{n}"), rate(f"runguard-{n}")),
                ">= 0.8",
                missing(f"rgetcd-{n}", f"runguard-{n}"),
            ),
            target(
                f"contended hand-off ({a.contended} on one): RunGuard on etcd:// / etcd's "
                "contended Lock/Unlock",
                ratio(rate("rgetcd-contended"), etc_),
                ">= 1.0",
                missing("rgetcd-contended", "etcd-contended"),
            ),
            target(
                f"Begin+End, {n} in flight, distinct: RunGuard on sqlite:// (synchronous=FULL) "
                "/ on memory://",
                ratio(rate(f"rgsqlite-{n}"), rate(f"runguard-{n}")),
                ">= 0.8",
                missing(f"rgsqlite-{n}", f"runguard-{n}"),
            ),
            target(
                "contended hand-off: RunGuard on memory:// / etcd's contended Lock/Unlock",
                ratio(rate("runguard-contended"), etc_),
                ">= 2.0",
                missing("runguard-contended", "etcd-contended"),
            ),
            target(
                f"Begin+End, {n} in flight, distinct, memory:// / half the no-op rate",
                ratio(rate(f"runguard-{n}"), halfn),
                ">= 0.85",
                missing(f"runguard-{n}", f"noop-{n}"),
            ),
            target(
                f"{biggest:,} watchers: release -> last watcher p99 / the no-op broadcast's p99",
                ratio(p99[1], p99[0]),
                "<= 1.2",
                "; ".join(x for x in (size, fan_gone) if x),
            ),
            target(
                f"{biggest:,} watchers: server memory per watcher / an idle no-op stream's",
                ratio(kib[1], kib[0]),
                "<= 1.1",
                "; ".join(
                    x
                    for x in (
                        size,
                        fan_gone,
                        "" if kib[1] is None else f"{kib[1]:.1f} / {kib[0]:.1f} KiB",
                    )
                    if x
                ),
            ),
            target(
                "Begin+End, 1 in flight, memory:// / half the no-op rate",
                ratio(rate("runguard-1"), half1),
                ">= 0.67",
                missing("runguard-1", "noop-1"),
            ),
        ]
        stream1, streamn = rate(f"stream1-{n}"), rate(f"stream-{n}")
        half_stream = None if stream1 is None else stream1 / 2
        clustered = [
            Target(
                f"Begin+End, {n} in flight, distinct: RunGuard on {m}-member etcd:// / on "
                "memory://",
                ratio(rate(f"rgetcd3-{n}"), rate(f"runguard-{n}")),
                "",
                None,
                missing(f"rgetcd3-{n}"),
            ),
            Target(
                f"Begin+End, {n} in flight, distinct: RunGuard on {m}-member etcd:// / etcd's "
                f"Lock/Unlock on it",
                ratio(rate(f"rgetcd3-{n}"), rate(f"etcd3-{n}")),
                "",
                None,
                missing(f"rgetcd3-{n}", f"etcd3-{n}"),
            ),
            Target(
                f"contended hand-off: RunGuard on {m}-member etcd:// / etcd's contended "
                "Lock/Unlock on it",
                ratio(rate("rgetcd3-contended"), rate("etcd3-contended")),
                "",
                None,
                missing("rgetcd3-contended", "etcd3-contended"),
            ),
            Target(
                f"etcd's contended Lock/Unlock: {m} members / one member",
                ratio(rate("etcd3-contended"), etc_),
                "",
                None,
                missing("etcd3-contended", "etcd-contended"),
            ),
        ]
        streamed = [
            Target(
                f"stream ceiling, ONE stream, {n} in flight: messages/s / unary no-op RPCs/s",
                ratio(stream1, rate(f"noop-{n}")),
                "",
                None,
                missing(f"stream1-{n}", f"noop-{n}"),
            ),
            Target(
                f"stream ceiling, a stream per client ({a.clients}): messages/s / unary no-op "
                "RPCs/s",
                ratio(streamn, rate(f"noop-{n}")),
                "",
                None,
                missing(f"stream-{n}", f"noop-{n}"),
            ),
            Target(
                "stream ceiling, ONE stream: server CPU per message / per unary no-op RPC",
                ratio(cpu(f"stream1-{n}"), cpu(f"noop-{n}")),
                "",
                None,
                missing(f"stream1-{n}", f"noop-{n}"),
            ),
            Target(
                "stream ceiling, ONE stream: messages/s / etcd's contended Lock/Unlock cycles/s",
                ratio(stream1, etc_),
                "",
                None,
                "a Begin+End cycle over a stream is two messages: half of it is "
                + ("-" if ratio(half_stream, etc_) is None else f"{ratio(half_stream, etc_):.2f}"),
            ),
        ]
        info = (clustered if self._cluster_wanted else []) + (
            [] if "stream" in self.skip else streamed
        )
        etn = rate(f"etcd-{n}")
        issue4 = [
            target(
                f"Begin+End, {n} in flight / etcd Lock/Unlock, {n} in flight, distinct keys",
                ratio(rate(f"runguard-{n}"), etn),
                ">= 1.0",
                missing(f"runguard-{n}", f"etcd-{n}"),
            ),
            target(
                f"{biggest:,} watchers: release -> last watcher p99 / etcd's",
                ratio(p99[1], p99[2]),
                "<= 1.0",
                size,
            ),
            target(f"{biggest:,} watchers: server memory per watcher, KiB", kib[1], "<= 25", size),
        ]
        return [
            ("targets (issue 12), from the ratios above:", issue12),
            ("the new rows, for information (no target):", info),
            ("earlier targets (issue 4) not in issue 12's table:", issue4),
        ]

    def raw(self) -> dict[str, Any]:
        """Every result, for ``--json``."""

        def load(result: LoadResult | None) -> Any:
            if result is None:
                return None
            return {
                "rate": result.rate,
                "cycles": result.cycles,
                "processes": result.processes,
                "cycle_ms_p50": percentile(result.cycle_ns, 50) / 1e6,
                "cycle_ms_p99": percentile(result.cycle_ns, 99) / 1e6,
                "handoff_ms_p50": percentile(result.handoff_ns, 50) / 1e6,
                "handoff_ms_p99": percentile(result.handoff_ns, 99) / 1e6,
                "handoffs": len(result.handoff_ns),
                "out_of_order": result.out_of_order,
                "retries": result.retries,
                "cpu_us_per_cycle": result.cpu_us_per_cycle,
                "spec": asdict(result.spec),
            }

        def fan(result: FanoutResult | None) -> Any:
            if result is None:
                return None
            return {
                "rounds": result.rounds,
                "last_ms": [x / 1e6 for x in result.last_ns],
                "first_ms": [x / 1e6 for x in result.first_ns],
                "open_seconds": result.open_seconds,
                "rss_before_kib": result.rss_before_kib,
                "rss_after_kib": result.rss_after_kib,
                "kib_per_watcher": result.kib_per_watcher,
                "cpu_us_per_delivery": result.cpu_us_per_delivery,
                "connections": result.connections,
                "processes": result.processes,
            }

        return {
            "args": {k: str(v) for k, v in vars(self.args).items()},
            "versions": self.versions,
            "load": {k: load(v) for k, v in self.load.items()},
            "fanout": {f"{s}-{w}": fan(v) for (s, w), v in self.fanout.items()},
            "history": None
            if self.history is None
            else {
                "operations": self.history.operations,
                "grants": len(self.history.grants),
                "expired": self.history.expired,
                "duplicates": len(self.history.duplicates),
                "rejected": self.history.rejected,
                "unavailable": self.history.unavailable,
                "violations": self.history.violations,
                "replicas": self.history.replicas,
                "clients": self.history.clients,
                "seconds": self.history.seconds,
            },
            "sqlite": {"dir": str(self.sqlite_dir), "filesystem": filesystem_of(self.sqlite_dir)},
            "cluster_members": self.args.cluster_members,
            "targets": {
                heading: [
                    {
                        "text": t.text,
                        "measured": t.measured,
                        "goal": t.goal or None,
                        "verdict": t.verdict,
                        "note": t.note,
                    }
                    for t in targets
                ]
                for heading, targets in self._targets()
            },
            "failures": self.failures,
        }


@contextlib.contextmanager
def _bench(args: argparse.Namespace) -> Iterator[Bench]:
    bench = Bench(args)
    try:
        yield bench
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit 0 when every phase ran (targets do not change it)."""
    args = _parser().parse_args(argv)
    with _bench(args) as bench:
        bench.load_start = _loadavg()
        _say(f"load average {bench.load_start}; {os.cpu_count()} cores")
        bench.clock_ok = check_shared_clock()
        bench._start_peers()
        if "load" not in bench.skip:
            bench.run_load_phases()
        if "fanout" not in bench.skip:
            bench.run_fanout_phases()
        if "history" not in bench.skip:
            bench.run_history_phase()
        table = bench.build().render()
        if args.json is not None:
            args.json.write_text(json.dumps(bench.raw(), indent=2))
    print(table)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
