"""Server reflection, v1alpha and v1, serving the contract *with its comments*.

grpcio-reflection serves only ``grpc.reflection.v1alpha`` and builds file
descriptors without source info, so ``grpcurl describe`` would show no
documentation. This servicer answers under both names (the protos are
wire-identical) and swaps in the contract's descriptor with its comments,
generated next to the stubs as ``runguard.binpb``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

__all__ = ["add_reflection"]

NAMES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


def _documented_files() -> dict[str, bytes]:
    data = resources.files("runguard.v1").joinpath("runguard.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {f.name: f.SerializeToString() for f in files.file}


class _DocumentedReflection(ReflectionServicer):  # type: ignore[misc]  # untyped library base
    def __init__(self, service_names: list[str]) -> None:
        super().__init__(service_names)
        self._documented = _documented_files()

    def _swap(self, response: reflection_pb2.ServerReflectionResponse) -> None:
        files = response.file_descriptor_response.file_descriptor_proto
        for index, serialized in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            if name in self._documented:
                files[index] = self._documented[name]

    async def ServerReflectionInfo(  # noqa: N802  # the RPC's name
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: Any,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                self._swap(response)
            yield response


def add_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    """Serve reflection for ``service_names`` under v1alpha and v1."""
    servicer = _DocumentedReflection([*service_names, *NAMES])
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(name, handlers) for name in NAMES)
    )
