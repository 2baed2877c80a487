"""A CRIU RPC client built on Debian's pycriu, for the interposer's end-to-end tests.

Runs in pycriu's own environment (``python3 -S`` with PYTHONPATH set to the
provisioned dist-packages: pycriu needs protobuf < 7), never in criu-aio's.
pycriu spawns the binary it is given as ``BINARY swrk <fd>`` (closing fds
0-2 first) and sends one request, exactly as applications do.

usage: rpc_client_pycriu.py PYCRIU_PATH BINARY|sk:SOCKET JSON_SPEC
  spec: {"type": "RESTORE"|"DUMP"|"PRE_DUMP"|"CHECK"|"VERSION"|"FEATURE_CHECK",
         "images_dir": PATH (opened, sent as images_dir_fd) | null,
         "images_dir_path": PATH (sent as images_dir) | null,
         "opts": {field: value, ...}, "features": {...}}
Prints the criu_resp as JSON (the fields a comparison needs) and exits 0.
"""

from __future__ import annotations

import json
import os
import sys

# pycriu's folder goes on our sys.path, not into PYTHONPATH: the binary pycriu
# spawns inherits our environment, as it would from any application.
sys.path.insert(0, sys.argv[1])
os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"  # pycriu needs protobuf < 7
import pycriu  # type: ignore[import-not-found]
from pycriu import rpc_pb2 as rpc  # type: ignore[import-not-found]

del os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"]


def build(spec: dict[str, object]) -> object:
    req = rpc.criu_req()
    req.type = rpc.criu_req_type.Value(spec["type"])
    fd_dir = spec.get("images_dir")
    opts = spec.get("opts") or {}
    if fd_dir or spec.get("images_dir_path") or opts:
        req.opts.images_dir_fd = -1
    if fd_dir:
        req.opts.images_dir_fd = os.open(str(fd_dir), os.O_RDONLY | os.O_DIRECTORY)
    if spec.get("images_dir_path"):
        req.opts.images_dir = str(spec["images_dir_path"])
    for key, value in dict(opts).items():  # type: ignore[call-overload]
        if key == "inherit_fd":
            for item in value:
                req.opts.inherit_fd.add(key=item["key"], fd=item["fd"])
        else:
            setattr(req.opts, key, value)
    for key, value in dict(spec.get("features") or {}).items():  # type: ignore[call-overload]
        setattr(req.features, key, value)
    return req


def main() -> None:
    binary, spec = sys.argv[2], json.loads(sys.argv[3])
    client = pycriu.criu()
    if binary.startswith("sk:"):
        client.use_sk(binary[3:])  # a service socket (criu service / criu-aio service)
    else:
        client.use_binary(binary)
    req = build(spec)
    resp = client._send_req_and_recv_resp(req)  # what restore()/dump() do, minus the raise
    out = {
        "type": rpc.criu_req_type.Name(resp.type),
        "success": resp.success,
        "cr_errno": resp.cr_errno if resp.HasField("cr_errno") else None,
        "cr_errmsg": resp.cr_errmsg if resp.HasField("cr_errmsg") else None,
        "restore_pid": resp.restore.pid if resp.HasField("restore") else None,
        "dump_restored": resp.dump.restored if resp.HasField("dump") else None,
        "version": [resp.version.major_number, resp.version.minor_number]
        if resp.HasField("version")
        else None,
        "features": {f.name: v for f, v in resp.features.ListFields()}
        if resp.HasField("features")
        else None,
        "swrk_pid": getattr(client._comm, "swrk", None),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
