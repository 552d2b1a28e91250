"""RunGuard's benchmarks: the server against its own ceiling and against etcd and Redis.

Not part of the test suite (pytest collects ``tests/`` only) and not shipped in
the wheel. ``bench/run`` is the one command: it starts what it needs on
loopback (a RunGuard server process, etcd from Debian's ``etcd-server``, Redis
from Debian's ``redis-server``), drives load from several client processes and
prints one table whose key figures are ratios measured in the same run.

Modules, one concept each:

- ``__main__``: the command line and the order of the phases.
- ``server``: the bench's RunGuard server process: the product's
  ``RunGuardServer`` plus bench-only methods on the same grpc.aio server, the
  ceilings (a no-op unary RPC; a no-op broadcast to idle streams; request/response
  messages on one bidirectional stream).
- ``peers``: starting and stopping the processes measured (RunGuard, etcd and an
  etcd cluster, Redis).
- ``systems``: one acquire/release pair per system, on raw stubs, so every
  system is driven by the same client machinery.
- ``load``: the closed-loop load harness (throughput, hand-off latency,
  server CPU per cycle).
- ``fanout``: the Watch fan-out harness (End to the last watcher's RELEASED,
  server memory and CPU per watcher).
- ``v3lock``: etcd's lock API (``v3lockpb.Lock``) messages, built at run time.
- ``report``: percentiles, the table and the targets.
- ``profiling``: optional py-spy profiles of the RunGuard server per phase.
"""
