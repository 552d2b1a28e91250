"""RunGuard: guards named run slots over gRPC.

The distribution holds four packages, each importing only those below it:

- ``runguard.server``: the service (``RunGuardServer``, its config, the stores);
- ``runguard.client``: the Python client and the client verbs of the CLI;
- ``runguard.contract``: what both sides share beyond the proto (the fingerprint,
  the wire's constants);
- ``runguard.v1``: the stubs generated from ``protos/runguard/v1/runguard.proto``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
