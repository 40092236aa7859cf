"""Generated ``keel.v1`` messages and gRPC stubs (``session_pb2``,
``session_pb2_grpc``, ``common_pb2``, ...), made from ``proto/keel/v1`` by the
package build. Most code wants the hand-written :mod:`keel_client` instead."""
