"""criu_req parsing and criu_resp building with our generated protobuf classes.

Imported only on the RESTORE/CHECK path and in the service (never on the
pass-through path of ``swrk``; see ``wire``). The parse keeps just what the
interposer decides on, as a frozen value, so ``protocol`` stays free of
protobuf objects.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.rpc.protocol import RpcRequest


def parse_request(data: bytes) -> RpcRequest:
    """Parse a criu_req datagram; raise ClientError when protobuf rejects it."""
    msg = rpc_pb2.criu_req()
    try:
        msg.ParseFromString(data)
    except DecodeError as err:
        raise ClientError(f"malformed criu_req ({len(data)} bytes): {err}") from err
    # The upb runtime does not enforce proto2 `required` on parse; CRIU's
    # protobuf-c unpack does, so check it here.
    if not msg.IsInitialized():
        raise ClientError(
            f"criu_req ({len(data)} bytes) lacks a required field (type, opts.images_dir_fd)"
        )
    if not msg.HasField("opts"):
        return RpcRequest(req_type=msg.type, keep_open=msg.keep_open)
    opts = msg.opts
    return RpcRequest(
        req_type=msg.type,
        has_opts=True,
        images_dir_fd=opts.images_dir_fd,
        images_dir=opts.images_dir if opts.HasField("images_dir") else None,
        work_dir_fd=opts.work_dir_fd if opts.HasField("work_dir_fd") else None,
        rst_sibling=opts.rst_sibling if opts.HasField("rst_sibling") else None,
        inherit_fd_keys=tuple(item.key for item in opts.inherit_fd),
        page_server_fd=opts.ps.fd if opts.HasField("ps") and opts.ps.HasField("fd") else None,
        status_fd=opts.status_fd if opts.HasField("status_fd") else None,
        config_file=opts.config_file if opts.HasField("config_file") else None,
        keep_open=msg.keep_open,
        log_file=opts.log_file if opts.HasField("log_file") else None,
    )
