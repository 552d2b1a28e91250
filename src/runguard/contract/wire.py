"""Names and values on the wire that the client and the server must spell alike."""

__all__ = ["AUTHORIZATION", "DEFAULT_TARGET", "DETAILS_KEY"]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where the server listens unless told otherwise, and where the client looks for it."""

DETAILS_KEY = "grpc-status-details-bin"
"""The trailing metadata key of a ``google.rpc.Status`` (INVALID_ARGUMENT's field
violations travel in it)."""

AUTHORIZATION = "authorization"
"""The metadata key (and HTTP header) of a bearer token: ``Bearer <token>``."""
