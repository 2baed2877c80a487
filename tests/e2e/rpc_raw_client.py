"""A minimal CRIU RPC client (our generated classes), for what pycriu cannot do.

It spawns ``BINARY swrk <fd>`` the way libcriu and go-criu do (the socket at
whatever number socketpair gave, extra descriptors passed along), answers
NOTIFY messages (notify_scripts) and records them, and returns the final
criu_resp. The restored tree of an rst_sibling restore becomes *our* child.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2


@dataclass
class Exchange:
    resp: rpc_pb2.criu_resp
    notifies: list[str] = field(default_factory=list)
    swrk_pid: int = 0
    swrk_status: int | None = None


def call(
    binary: str,
    req: rpc_pb2.criu_req,
    pass_fds: Sequence[int] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Exchange:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [binary, "swrk", str(theirs.fileno())],
            pass_fds=[theirs.fileno(), *pass_fds],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        ours.settimeout(timeout)
        ours.send(req.SerializeToString())
        out = Exchange(resp=rpc_pb2.criu_resp(), swrk_pid=proc.pid)
        while True:
            data = ours.recv(1 << 20)
            resp = rpc_pb2.criu_resp()
            resp.ParseFromString(data)
            if resp.type == rpc_pb2.NOTIFY:
                out.notifies.append(resp.notify.script)
                ack = rpc_pb2.criu_req(type=rpc_pb2.NOTIFY, notify_success=True)
                ours.send(ack.SerializeToString())
                continue
            out.resp = resp
            break
        out.swrk_status = proc.wait(timeout)
        return out
    finally:
        ours.close()
        theirs.close()
