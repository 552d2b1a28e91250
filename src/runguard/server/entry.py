"""The ``runguard`` command's entry point: settles grpc's own logging, then runs the CLI.

grpc's C core writes its own lines (``I1201 … Handshake failed``, ``E1201 … add_port.cc``)
to stderr, between the server's JSON lines, and reads ``GRPC_VERBOSITY`` and ``GRPC_TRACE``
only once, when it is first loaded. So this module imports nothing of grpc: it sets
``GRPC_VERBOSITY=NONE`` unless the caller chose a level (``GRPC_TRACE`` alone means
``debug``, which tracing needs) and only then loads the CLI. What those lines would say
reaches the user as RunGuard's own messages (a port in use, a client without TLS).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

__all__ = ["EXIT_CLOSED_PIPE", "main", "quiet_grpc"]


def quiet_grpc(env: MutableMapping[str, str]) -> None:
    """Silence grpc's C-core log lines unless ``GRPC_VERBOSITY`` or ``GRPC_TRACE`` is set."""
    if not env.get("GRPC_VERBOSITY"):
        env["GRPC_VERBOSITY"] = "DEBUG" if env.get("GRPC_TRACE") else "NONE"


EXIT_CLOSED_PIPE = 141
"""What a shell shows for a command ended by SIGPIPE (128 + 13): the reader went away."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``runguard`` command with grpc's logging settled; returns the exit code.

    A closed pipe on stdout (``runguard health | head -c1``) ends it quietly, with 141.
    """
    quiet_grpc(os.environ)
    from runguard.server.cli import main as cli_main  # only now: grpc reads them on load

    try:
        return cli_main(argv)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
