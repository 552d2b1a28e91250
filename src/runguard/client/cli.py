"""The client verbs of the ``runguard`` command: begin, end, keepalive, current, configure,
guards, watch, run, cancel, get.

Exit codes: 0 done (granted, ended, ...); 75 refused (a rejected Begin, a lost
lease: try again later); 1 a fault (bad request, wrong token, server
unreachable, no such run); 2 bad usage. ``runguard run`` passes its command's
exit code through once it ran (128 + N when a signal N ended it). When its run
is cancelled (``runguard cancel``), it sends SIGTERM to the command, keeps the
slot until the command has exited, then Ends with outcome "cancelled".
``--json`` prints one JSON object per line for scripts.

A server with TLS or tokens: ``--cacert``, ``--cert``, ``--cert-key`` and
``--auth-token`` (or ``RUNGUARD_CACERT``, ``RUNGUARD_CERT``, ``RUNGUARD_KEY``,
``RUNGUARD_TOKEN``; a flag wins). ``--key`` and ``--token`` were taken before
(the idempotency key, the lease token), hence the longer names.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runguard.client._connect import ENVIRONMENT, connect_options
from runguard.client._shared import BeginOptions
from runguard.client._sync import Client
from runguard.client.errors import (
    Cancelled,
    InvalidArgument,
    LeaseLost,
    RunGuardError,
    RunNotFound,
    RunRejected,
)
from runguard.client.models import (
    OUTCOMES,
    Change,
    EndResult,
    GuardState,
    Progress,
    Run,
    Snapshot,
    WatchEvent,
)
from runguard.contract import DEFAULT_TARGET

__all__ = [
    "EXIT_FAULT",
    "EXIT_REFUSED",
    "VERBS",
    "add_connection_flags",
    "add_verbs",
    "run_usage",
    "run_verb",
    "split_command",
]

EXIT_FAULT = 1
EXIT_REFUSED = 75  # EX_TEMPFAIL: refused for now, try again later
EXIT_CLOSED_PIPE = 141  # what a shell shows for a command ended by SIGPIPE (128 + 13)
VERBS = (
    "begin",
    "end",
    "keepalive",
    "current",
    "configure",
    "guards",
    "watch",
    "run",
    "cancel",
    "get",
)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _seconds(text: str) -> float:
    """A finite number of seconds (NaN and infinities are refused as usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    return value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """``--cacert``, ``--cert``, ``--cert-key``, ``--auth-token``, defaulting to the environment."""
    for flag, name, helptext in (
        ("--cacert", "ca", "PEM file of the CA that signed the server's certificate (TLS)"),
        ("--cert", "cert", "PEM file of this client's certificate (mTLS)"),
        ("--cert-key", "key", "PEM file of this client's private key (mTLS)"),
        ("--auth-token", "token", "bearer token (prefer the variable: flags show in ps)"),
    ):
        variable = ENVIRONMENT[name]
        parser.add_argument(
            flag,
            dest=f"connect_{name}",
            default=os.environ.get(variable) or None,
            metavar="TOKEN" if name == "token" else "FILE",
            help=f"{helptext} ({variable})",
        )


def add_verbs(verbs: Any) -> None:
    """Add the client verbs to the ``runguard`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default=os.environ.get("RUNGUARD_TARGET", DEFAULT_TARGET),
        help="host:port of the server (RUNGUARD_TARGET, 127.0.0.1:50051)",
    )
    add_connection_flags(common)
    common.add_argument("--timeout", type=_seconds, default=10.0, help="seconds per call (10)")
    common.add_argument("--json", action="store_true", help="one JSON object per line")

    submission = argparse.ArgumentParser(add_help=False)
    submission.add_argument("--route", default="", help="what is run; part of the fingerprint")
    what = submission.add_mutually_exclusive_group()
    what.add_argument("--payload", type=_json_value, help="the submission as JSON")
    what.add_argument("--key", help="an idempotency key instead of a payload")
    submission.add_argument("--operation-id", help="your name for the run (made when absent)")
    submission.add_argument("--wait", type=_seconds, help="seconds to queue when the guard is full")
    submission.add_argument(
        "--label", action="append", type=_label, default=[], metavar="KEY=VALUE"
    )

    begin = verbs.add_parser("begin", parents=[common, submission], help="take a slot")
    begin.add_argument("guard", nargs="?", default="")
    begin.add_argument("--ttl", type=_seconds, help="lease seconds (the server's max)")

    for name, helptext in (("end", "give a slot back"), ("keepalive", "extend a lease")):
        verb = verbs.add_parser(name, parents=[common], help=helptext)
        verb.add_argument("guard")
        verb.add_argument("operation_id")
        verb.add_argument("--token", default="", help="the lease token from begin")
        if name == "end":
            verb.add_argument("--force", action="store_true", help="free without the token")
            verb.add_argument("--outcome", choices=OUTCOMES, help="how the run went")
            verb.add_argument(
                "--result", type=_json_value, help="a small JSON result kept with the run"
            )
        else:
            verb.add_argument("--ttl", type=_seconds, help="new lease seconds")
            verb.add_argument("--fraction", type=float, help="progress: how much is done, 0 to 1")
            verb.add_argument("--message", help="progress: a short sentence for people")

    cancel = verbs.add_parser(
        "cancel", parents=[common], help="ask a run to stop (its slot stays held until it ends)"
    )
    cancel.add_argument("guard")
    cancel.add_argument("operation_id")
    cancel.add_argument("--reason", default="", help="why, shown to the holder and watchers")

    get = verbs.add_parser("get", parents=[common], help="show a live or recently ended run")
    get.add_argument("guard")
    get.add_argument("operation_id")

    current = verbs.add_parser("current", parents=[common], help="show a guard's holders")
    current.add_argument("guard", nargs="?", default="")

    configure = verbs.add_parser(
        "configure", parents=[common], help="change a guard's settings (role admin)"
    )
    configure.add_argument("guard")
    configure.add_argument("--capacity", type=int, help="runs that may hold a slot at once")
    configure.add_argument(
        "--dedup-window", type=_seconds, help="seconds a submission is remembered"
    )
    configure.add_argument("--max-queue", type=int, help="callers that may queue")
    configure.add_argument(
        "--reset", action="store_true", help="follow the store-wide defaults again"
    )

    guards = verbs.add_parser("guards", parents=[common], help="list the guards the store holds")
    guards.add_argument("--page-size", type=int, default=0, help="guards per request (100)")

    watch = verbs.add_parser("watch", parents=[common], help="print slot changes as they happen")
    watch.add_argument("guards", nargs="*", help="guards to watch (every guard when none)")

    run = verbs.add_parser(
        "run",
        parents=[common, submission],
        help="hold a slot while a command runs: runguard run GUARD -- CMD ARGS...",
    )
    run.add_argument("guard")
    run.add_argument("--ttl", type=_seconds, default=30.0, help="lease seconds, renewed (30)")
    run.set_defaults(command=[])  # what follows "--", split off by split_command


FREE_VALUE_FLAGS = frozenset(
    {
        "--auth-token",
        "--key",
        "--label",
        "--message",
        "--operation-id",
        "--payload",
        "--reason",
        "--result",
        "--route",
        "--token",
    }
)
"""Flags whose value is free text (a token, a key, JSON, a sentence) and may start with "-"."""


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``runguard run ... -- CMD ARGS`` into the runguard arguments and the command.

    The value after a flag of ``FREE_VALUE_FLAGS`` is kept with it (``--token -x`` is read
    as ``--token=-x``): argparse would take a value starting with "-" for another flag.
    """
    at = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:at], argv[at + 1 :]
    glued: list[str] = []
    index = 0
    while index < len(own):
        arg = own[index]
        if arg in FREE_VALUE_FLAGS and index + 1 < len(own):
            glued.append(f"{arg}={own[index + 1]}")
            index += 2
            continue
        glued.append(arg)
        index += 1
    return glued, command


def run_usage(guard: str, extra: list[str]) -> str:
    """The message for ``runguard run GUARD CMD`` without ``--``: where the command goes."""
    return (
        f"runguard run: put the command after --, as in: "
        f"runguard run {shlex.quote(guard)} -- {shlex.join(extra)}\n"
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _emit(as_json: bool, text: str, data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True) if as_json else text, flush=True)


def _run_text(run: Run) -> str:
    text = (
        f"{run.guard} {run.operation_id} fencing={run.fencing_token} "
        f"expires={run.expires_at.isoformat(timespec='seconds')}"
        + (f" by={run.principal}" if run.principal else "")
    )
    return text + _life_text(run)


def _life_text(run: Run) -> str:
    """How far a run got, whether it was asked to stop, and how it ended."""
    text = ""
    if run.progress is not None:
        if run.progress.fraction is not None:
            text += f" progress={run.progress.fraction:.0%}"
        if run.progress.message:
            text += f" {json.dumps(run.progress.message)}"
    if run.cancel_requested:
        text += " cancel-requested" + (
            f" ({json.dumps(run.cancel_reason)})" if run.cancel_reason else ""
        )
    if run.state == "ended":
        text += f" end_reason={run.end_reason}"
        if run.outcome is not None:
            text += f" outcome={run.outcome}"
        if run.result is not None:
            text += f" result={json.dumps(run.result, sort_keys=True)}"
    return text


def _state_text(state: GuardState) -> str:
    lines = [
        f"{state.guard}: {len(state.holders)}/{state.capacity} held, {state.queue_length} queued"
    ]
    lines += [f"  {_run_text(run)}" for run in state.holders]
    return "\n".join(lines)


def _event_text(event: WatchEvent) -> str:
    if isinstance(event, Snapshot):
        head = f"snapshot rev={event.revision}" + (" (resynced)" if event.resynced else "")
        return "\n".join([head, *(_state_text(state) for state in event.guards)])
    if isinstance(event, Progress):
        return f"progress rev={event.revision}"
    if event.run is None:
        return f"rev={event.revision} {event.kind} {_state_text(event.state)}"
    how = f" ({event.reason})" if event.reason else ""
    return f"rev={event.revision} {event.kind}{how} {_run_text(event.run)}"


def _event_json(event: WatchEvent) -> dict[str, Any]:
    kind = {Snapshot: "snapshot", Change: "change", Progress: "progress"}[type(event)]
    return {"event": kind, **_plain(event)}


def _refused(args: argparse.Namespace, error: RunGuardError) -> int:
    outcome = "rejected" if isinstance(error, RunRejected) else "lease_lost"
    data: dict[str, Any] = {"outcome": outcome, "message": error.message}
    if isinstance(error, RunRejected):
        data.update(reason=error.reason, holders=_plain(error.holders))
        if error.retry_after is not None:
            data["retry_after"] = error.retry_after
        text = f"rejected {error.reason}: {error.message}"
        if error.duplicate_of is not None:
            data["duplicate_of"] = _plain(error.duplicate_of)
            earlier = error.duplicate_of
            text += f"\nearlier run: {earlier.operation_id} {earlier.state}{_life_text(earlier)}"
    else:
        text = f"lease lost: {error.message}"
    _emit(args.json, text, data)
    return EXIT_REFUSED


def _begin_options(args: argparse.Namespace, route: str, payload: Any) -> BeginOptions:
    """The Begin keywords the ``begin`` and ``run`` verbs' flags give."""
    return BeginOptions(
        route=route,
        payload=payload,
        idempotency_key=args.key,
        operation_id=args.operation_id,
        ttl=args.ttl,
        wait=args.wait,
        labels=dict(args.label),
    )


def _begin(client: Client, args: argparse.Namespace) -> int:
    grant = client.begin(args.guard, **_begin_options(args, args.route, args.payload))
    _emit(
        args.json,
        f"granted {_run_text(grant.run)}\nlease_token={grant.lease_token}",
        {"outcome": "granted", "run": _plain(grant.run), "lease_token": grant.lease_token},
    )
    return 0


def _held(args: argparse.Namespace) -> tuple[str, str, str]:
    """The guard, operation_id and lease token of the run a verb names."""
    return args.guard, args.operation_id, args.token


def _end(client: Client, args: argparse.Namespace) -> int:
    result = client.end(*_held(args), force=args.force, outcome=args.outcome, result=args.result)
    text = result.value.replace("_", " ")
    if result is EndResult.UNKNOWN:
        text += ": the guard has no run of that operation_id (never granted, or long forgotten)"
    _emit(args.json, text, {"result": result.value})
    return 0


def _keepalive(client: Client, args: argparse.Namespace) -> int:
    run = client.keep_alive(
        *_held(args), ttl=args.ttl, fraction=args.fraction, message=args.message
    )
    _emit(args.json, f"renewed {_run_text(run)}", {"run": _plain(run)})
    return 0


def _cancel(client: Client, args: argparse.Namespace) -> int:
    reply = client.cancel(args.guard, args.operation_id, reason=args.reason)
    _emit(
        args.json,
        f"{reply.result.value.replace('_', ' ')} {_run_text(reply.run)}",
        {"result": reply.result.value, "run": _plain(reply.run)},
    )
    return 0


def _get(client: Client, args: argparse.Namespace) -> int:
    run = client.get_run(args.guard, args.operation_id)
    _emit(args.json, f"{run.state} {_run_text(run)}", {"run": _plain(run)})
    return 0


def _current(client: Client, args: argparse.Namespace) -> int:
    state = client.current(args.guard)
    _emit(args.json, _state_text(state), _plain(state))
    return 0


def _configure(client: Client, args: argparse.Namespace) -> int:
    state = client.configure_guard(
        args.guard,
        capacity=args.capacity,
        dedup_window=args.dedup_window,
        max_queue=args.max_queue,
        reset=args.reset,
    )
    own = "own settings" if state.configured else "store-wide defaults"
    text = (
        f"{state.guard}: capacity={state.capacity} dedup_window={state.dedup_window:g}s "
        f"max_queue={state.max_queue} ({own})"
    )
    _emit(args.json, text, _plain(state))
    return 0


def _guards(client: Client, args: argparse.Namespace) -> int:
    token = ""
    while True:
        states, token = client.list_guards(page_size=args.page_size, page_token=token)
        for state in states:
            _emit(args.json, _state_text(state), _plain(state))
        if not token:
            return 0


def _watch(client: Client, args: argparse.Namespace) -> int:
    with client.watch(args.guards) as stream:
        for event in stream:
            _emit(args.json, _event_text(event), _event_json(event))
    return 0


def _run(client: Client, args: argparse.Namespace) -> int:
    command = args.command
    if not command:
        print("runguard run: give the command after --", file=sys.stderr)
        return 2
    child: list[subprocess.Popen[bytes]] = []
    started = threading.Event()

    def stop_child(error: LeaseLost | Cancelled) -> None:
        print(f"runguard run: {error.message}; stopping the command", file=sys.stderr)
        started.wait()
        _signal_group(child[0], signal.SIGTERM)

    payload = args.payload if args.payload is not None or args.key else command
    options = _begin_options(args, args.route or "runguard run", payload)
    with client.run(args.guard, on_lost=stop_child, on_cancel=stop_child, **options) as holding:
        # Its own process group: a stop reaches the whole command (a shell's children
        # too), as GNU timeout does it.
        child.append(subprocess.Popen(command, process_group=0))
        started.set()
        forward = _forward_signals(child[0])
        try:
            code = child[0].wait()
        finally:
            forward()
        if holding.lost:
            return EXIT_REFUSED
        code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say
        # The slot is given back only now that the command has exited.
        if holding.cancel_requested:
            outcome = "cancelled"
        else:
            outcome = "succeeded" if code == 0 else "failed"
        holding.finish({"exit_code": code}, outcome=outcome)
    if holding.cancel_requested:
        _emit(
            args.json,
            f"cancelled: the command exited with {code}; the run ended cancelled",
            {"outcome": "cancelled", "exit_code": code},
        )
    return code


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the command's process group (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _forward_signals(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Pass SIGTERM and SIGINT on to the command's process group; returns how to undo it."""
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda n, _f: _signal_group(process, n))

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


_HANDLERS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "begin": _begin,
    "end": _end,
    "keepalive": _keepalive,
    "current": _current,
    "configure": _configure,
    "guards": _guards,
    "watch": _watch,
    "run": _run,
    "cancel": _cancel,
    "get": _get,
}


def run_verb(args: argparse.Namespace) -> int:
    """Run a client verb parsed by the ``runguard`` parser; returns the exit code."""
    try:
        options = connect_options(
            ca=args.connect_ca,
            cert=args.connect_cert,
            key=args.connect_key,
            token=args.connect_token,
        )
    except ValueError as error:
        print(f"runguard {args.verb}: {error}", file=sys.stderr)
        return 2
    try:
        with Client(args.target, timeout=args.timeout, **options) as client:
            return _HANDLERS[args.verb](client, args)
    except RunNotFound as error:
        print(f"runguard {args.verb}: no such run: {error.message}", file=sys.stderr)
        return EXIT_FAULT
    except (RunRejected, LeaseLost) as error:
        return _refused(args, error)
    except InvalidArgument as error:
        fields = "; ".join(f"{field}: {text}" for field, text in error.violations)
        print(f"runguard {args.verb}: invalid: {fields or error.message}", file=sys.stderr)
        return EXIT_FAULT
    except RunGuardError as error:
        print(f"runguard {args.verb}: {type(error).__name__}: {error.message}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): no traceback, nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
