"""ML Metadata's gRPC service (ml_metadata.MetadataStoreService, what KFP's metadata-grpc-service
serves) on 127.0.0.1, backed by real MLMD on a SQLite file: every method of the service forwards
its request to ml-metadata's own C++ store. The ml-metadata wheel ships no server binary; this is
the same service interface, so the platform's `metadata.backend: grpc` path runs for real.

    with MlmdGrpcServer(tmp_path / "mlmd.sqlite") as port: ...
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import message_factory
from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2, metadata_store_service_pb2

SERVICE = metadata_store_service_pb2.DESCRIPTOR.services_by_name["MetadataStoreService"]
# ml_metadata.errors codes are the gRPC status codes' numbers.
_STATUS = {code.value[0]: code for code in grpc.StatusCode}


class MlmdGrpcServer:
    def __init__(self, sqlite_path: str | Path):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = str(sqlite_path)
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.calls: list[str] = []
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                self._forward(method.name, message_factory.GetMessageClass(method.output_type)),
                request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
            for method in SERVICE.methods
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _forward(self, name: str, response_class):
        def handle(request, context):
            self.calls.append(name)
            response = response_class()
            try:
                self.store._call(name, request, response)  # the C++ store, as the real server runs it
            except errors.StatusError as e:
                context.abort(_STATUS.get(e.error_code, grpc.StatusCode.UNKNOWN), str(e))
            return response

        return handle

    def __enter__(self) -> int:
        self.server.start()
        return self.port

    def __exit__(self, *exc):
        self.server.stop(grace=None)
