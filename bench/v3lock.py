"""etcd's lock API, ``v3lockpb.Lock`` (``Lock(name, lease)`` / ``Unlock(key)``).

etcd serves it on its client port next to KV, Lease and Watch: ``Lock`` blocks
in the server until the caller holds the lock (the server runs etcd's own
concurrency recipe, a key under ``name/`` tied to the lease and ordered by
create revision) and returns the key that ``Unlock`` deletes. It is what
``etcdctl lock`` uses, and one call each way, like Begin and End.

The Python clients on PyPI ship only the KV/Lease/Watch stubs, so the four
messages are declared here at run time (in a private descriptor pool) with
etcd's field numbers; fields not declared (the response header's other
members) are skipped on parsing as protobuf does with unknown fields.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["LockRequest", "LockResponse", "UnlockRequest", "UnlockResponse", "lock_stubs"]

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="bench/v3lock.proto", package="v3lockpb", syntax="proto3"
    )
    header = file.message_type.add(name="ResponseHeader")
    header.field.add(name="revision", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    lock = file.message_type.add(name="LockRequest")
    lock.field.add(name="name", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    lock.field.add(name="lease", number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    for name in ("LockResponse", "UnlockResponse"):
        message = file.message_type.add(name=name)
        message.field.add(
            name="header",
            number=1,
            type=_F.TYPE_MESSAGE,
            type_name=".v3lockpb.ResponseHeader",
            label=_F.LABEL_OPTIONAL,
        )
        if name == "LockResponse":
            message.field.add(name="key", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    unlock = file.message_type.add(name="UnlockRequest")
    unlock.field.add(name="key", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"v3lockpb.{name}"))


LockRequest = _message("LockRequest")
LockResponse = _message("LockResponse")
UnlockRequest = _message("UnlockRequest")
UnlockResponse = _message("UnlockResponse")


def lock_stubs(channel: grpc.aio.Channel) -> tuple[Any, Any]:
    """``(Lock, Unlock)`` callables on an asyncio channel to etcd."""
    lock = channel.unary_unary(
        "/v3lockpb.Lock/Lock",
        request_serializer=LockRequest.SerializeToString,
        response_deserializer=LockResponse.FromString,
    )
    unlock = channel.unary_unary(
        "/v3lockpb.Lock/Unlock",
        request_serializer=UnlockRequest.SerializeToString,
        response_deserializer=UnlockResponse.FromString,
    )
    return lock, unlock
