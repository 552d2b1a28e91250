"""``runguard``: the command line: ``serve`` and ``health`` here, the client verbs in
``runguard.client.cli``. These and the seed's drop-in (``runguard.client.run_guard``,
whose callers configure it so) are the only modules that read the environment.

Environment (flags win): ``RUN_DEDUP_WINDOW_SECS`` (5) and ``RUN_MAX_SECS``
(1800) keep the seed's meaning; ``RUNGUARD_LISTEN`` and ``RUNGUARD_STORE``
give the listen address and store URL.

Signals of ``serve``: SIGTERM and SIGINT drain and stop (a second one exits at
once); SIGHUP rereads the ``--auth-tokens`` file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runguard import __version__
from runguard.client import connect_options
from runguard.client.cli import (
    VERBS,
    add_connection_flags,
    add_verbs,
    run_usage,
    run_verb,
    split_command,
)
from runguard.client.hints import with_hint
from runguard.contract import DEFAULT_TARGET
from runguard.server.app import RunGuardServer, configure_logging
from runguard.server.config import ServerConfig
from runguard.server.errors import StoreUnavailable

__all__ = ["build_config", "main"]


def _capacity(text: str) -> tuple[str, int]:
    guard, sep, number = text.partition("=")
    if not sep or not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected GUARD=CAPACITY, got {text!r}")
    return guard, int(number)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runguard", description="RunGuard: guards named run slots over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"runguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve", help="run the RunGuard server")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051; port 0 picks one)")
    serve.add_argument(
        "--store",
        help="store URL: memory:// (default), sqlite:///path.db, etcd://host:port,host:port",
    )
    serve.add_argument(
        "--guard",
        action="append",
        type=_capacity,
        default=[],
        metavar="NAME=CAPACITY",
        help="capacity of a guard (repeatable); others get --default-capacity",
    )
    serve.add_argument("--default-capacity", type=int, help="capacity of other guards (1)")
    serve.add_argument("--dedup-window", type=float, help="seconds (RUN_DEDUP_WINDOW_SECS, 5)")
    serve.add_argument("--max-ttl", type=float, help="longest, default lease (RUN_MAX_SECS, 1800)")
    serve.add_argument("--max-wait", type=float, help="longest a Begin may queue, seconds (3600)")
    serve.add_argument("--max-queue", type=int, help="callers that may queue per guard (1000)")
    serve.add_argument("--progress-interval", type=float, help="Watch heartbeat, seconds (10)")
    serve.add_argument("--history", type=int, help="changes kept for resuming watchers (10000)")
    serve.add_argument("--shutdown-grace", type=float, help="seconds calls get on stop (5)")
    serve.add_argument(
        "--max-connection-age", type=float, help="close connections after this many seconds"
    )
    serve.add_argument(
        "--max-connection-age-grace", type=float, help="seconds calls get after that (30)"
    )
    serve.add_argument(
        "--metrics-listen", help="host:port to serve Prometheus /metrics on (off by default)"
    )
    serve.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="serve Connect, gRPC-Web, SSE (/v1/events) and the status page (/) here (off)",
    )
    serve.add_argument(
        "--http-cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an exact origin (https://app.example.com) whose pages may call the HTTP front "
        "(repeatable; none by default)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA(s) of client certificates: require one (mTLS); its identity is the principal",
    )
    serve.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="bearer tokens, one 'TOKEN PRINCIPAL ROLE[,ROLE]' per line; reread on SIGHUP",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback address without TLS or tokens anyway",
    )
    serve.add_argument(
        "--max-watchers-per-principal",
        type=int,
        help="Watch streams one authenticated principal may hold open (1000)",
    )
    serve.add_argument(
        "--max-request-bytes", type=int, help="largest request message read (1048576)"
    )
    serve.add_argument("--max-guards", type=int, help="guards the store may hold at once (250000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    health = verbs.add_parser("health", help="exit 0 if a server reports SERVING (for probes)")
    health.add_argument(
        "--target",
        default=os.environ.get("RUNGUARD_TARGET") or DEFAULT_TARGET,
        help="host:port of the server (RUNGUARD_TARGET, 127.0.0.1:50051)",
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    add_connection_flags(health)
    add_verbs(verbs)
    return parser


def _health(args: argparse.Namespace) -> int:
    target, timeout = args.target, args.timeout
    try:
        credentials = connect_options(
            ca=args.connect_ca, cert=args.connect_cert, key=args.connect_key
        )["credentials"]
    except ValueError as error:
        print(f"runguard health: {error}", file=sys.stderr)
        return 2
    with (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            details = with_hint(error.details() or "", tls=credentials is not None)
            print(f"runguard: {target}: {error.code().name}: {details}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """The server's configuration from parsed flags, then the environment, then defaults."""
    values: dict[str, object] = {}

    def pick(name: str, flag: object, variable: str | None = None, kind: type = float) -> None:
        if flag is not None:
            values[name] = flag
        elif variable is not None and env.get(variable):
            try:
                values[name] = kind(env[variable])
            except ValueError:
                raise ValueError(f"{variable}={env[variable]!r} is not a number") from None

    pick("listen", args.listen, "RUNGUARD_LISTEN", str)
    pick("store_url", args.store, "RUNGUARD_STORE", str)
    pick("default_capacity", args.default_capacity)
    pick("dedup_window", args.dedup_window, "RUN_DEDUP_WINDOW_SECS")
    pick("max_ttl", args.max_ttl, "RUN_MAX_SECS")
    pick("max_wait", args.max_wait)
    pick("max_queue", args.max_queue)
    pick("progress_interval", args.progress_interval)
    pick("history", args.history)
    pick("shutdown_grace", args.shutdown_grace)
    pick("max_connection_age", args.max_connection_age)
    pick("max_connection_age_grace", args.max_connection_age_grace)
    pick("metrics_listen", args.metrics_listen, None, str)
    pick("tls_cert", args.tls_cert, None, str)
    pick("tls_key", args.tls_key, None, str)
    pick("tls_client_ca", args.tls_client_ca, None, str)
    pick("auth_tokens", args.auth_tokens, None, str)
    pick("insecure", args.insecure, None, bool)
    pick("max_watchers_per_principal", args.max_watchers_per_principal)
    pick("max_request_bytes", args.max_request_bytes)
    pick("max_guards", args.max_guards)
    pick("http_listen", args.http_listen, None, str)
    if args.http_cors_origin:
        values["http_cors_origins"] = tuple(args.http_cors_origin)
    values["capacities"] = dict(args.guard)
    return ServerConfig(**values)  # type: ignore[arg-type]  # keys are ServerConfig's fields


async def _serve(config: ServerConfig) -> None:
    server = RunGuardServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if stopping:  # a second signal: stop waiting for the drain
            os._exit(1)
        stopping.append(loop.create_task(server.stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    loop.add_signal_handler(signal.SIGHUP, server.reload_auth)
    await server.wait()
    if stopping:
        await stopping[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``runguard`` command; returns the exit code."""
    own, command = split_command(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args, extra = parser.parse_known_args(own)
    if extra:
        if args.verb == "run":
            parser.exit(2, run_usage(args.guard, extra))
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command = command
    if args.verb == "health":
        return _health(args)
    if args.verb in VERBS:
        return run_verb(args)
    try:
        config = build_config(args, os.environ)
    except ValueError as error:
        print(f"runguard: {error}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        asyncio.run(_serve(config))
    except (RuntimeError, ValueError, StoreUnavailable) as error:  # bad --store or store down
        print(f"runguard: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
