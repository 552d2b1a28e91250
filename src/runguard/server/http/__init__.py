"""The HTTP front: the API over Connect and gRPC-Web, Watch as Server-Sent Events at
``/v1/events``, and a live status page at ``/``, in the gRPC server's process and loop.

Every route goes through the gRPC servicer's handlers (validation, the error map,
metrics) and the same authentication and roles.
"""

from runguard.server.http.credentials import HttpCredentials
from runguard.server.http.routes import HttpApp
from runguard.server.http.server import HttpFront

__all__ = ["HttpApp", "HttpCredentials", "HttpFront"]
