"""What the gateway's reflection describes: the routed rpcs, nothing internal.

The contract's files mix public and internal rpcs in one service (``ConsentService`` has
``CreateConsent`` and the bank app's ``AuthoriseConsent``; ``TokenService`` has
``IssueToken`` and the services' ``IntrospectToken``). Serving those files as they are
would list internal rpcs to partners (``buf curl --list-methods``) that the gateway then
answers UNIMPLEMENTED. The gateway serves copies of them without the methods it does not
route, and without services left empty; messages and the other files stay as they are.
"""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor


def public_descriptor_pool(
    routed_methods: Collection[str], service_names: Collection[str]
) -> descriptor_pool.DescriptorPool:
    """A pool with the files of ``service_names`` (and their imports), every openbank service
    cut down to the methods in ``routed_methods`` (full paths, ``/pkg.Service/Method``)."""
    source = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        if proto.package.startswith("openbank."):
            _keep_routed(proto, routed_methods)
        pool.Add(proto)
        added.add(file.name)

    for name in service_names:
        add(source.FindServiceByName(name).file)
    return pool


def _keep_routed(proto: descriptor_pb2.FileDescriptorProto, routed_methods: Collection[str]) -> None:
    """Drop the methods the gateway does not route, then the services left without any."""
    for service_index in reversed(range(len(proto.service))):
        service = proto.service[service_index]
        prefix = f"/{proto.package}.{service.name}/"
        for method_index in reversed(range(len(service.method))):
            if prefix + service.method[method_index].name not in routed_methods:
                del service.method[method_index]
        if not service.method:
            del proto.service[service_index]
