"""What a client of the root service may not ask for unless it is root itself (pure).

The worker the service execs is ``criu swrk``, running as root. Two request
options make that root CRIU run a program the client chose, with no image
crafted at all:

- ``config_file``: a CRIU config file may hold ``action-script PATH``, which
  CRIU runs at each stage (pre-dump, pre-restore, ...) with its own
  credentials. CRIU 4.1.1 reads the file as root (criu/cr-service.c
  setup_opts_from_req: no change of uid before parse_options). Measured here
  through this service before this module existed: a DUMP of itself sent by
  uid 65534 with such a config ran the script as ``uid=0(root)``. Upstream
  CRIU later refused config_file in standalone ``criu service`` mode (PR
  #3025); the worker we exec runs in swrk mode, where CRIU allows it, so we
  refuse it here, as we refuse rst_sibling and inherit_fd (``protocol.screen``);
- ``exec_cmd``: after a successful restore CRIU execvp()s it, as root
  (criu/cr-service.c restore_using_req).

A root client gains nothing from them and keeps them. The request is read
with the protobuf runtime (merge semantics: every ``opts`` occurrence counts);
what it cannot parse is refused, never waved through.

This does not make the socket safe for untrusted users: CRIU restores the
credentials and opens the files a checkpoint names, as root, so whoever can
have the root service restore images they wrote can run code as any user.
See examples/service/README.md: give access to the socket only to users you
would give root.
"""

from __future__ import annotations

import errno as _errno

from google.protobuf.message import DecodeError

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.rpc import protocol


def screen(data: bytes, uid: int) -> protocol.Answer | None:
    """The refusal for request *data* from a client of *uid*, or None when it may go on."""
    if uid == 0:
        return None
    try:
        req = rpc_pb2.criu_req.FromString(data)
    except DecodeError as err:
        return protocol.malformed(f"criu_req: {err}")
    what = []
    if req.opts.HasField("config_file"):
        what.append("config_file (CRIU would run its action scripts as root)")
    if req.opts.exec_cmd:
        what.append("exec_cmd (CRIU would run it as root)")
    if not what:
        return None
    return protocol.answer(
        req.type,
        _errno.EPERM,
        f"criu-aio service: {' and '.join(what)} is allowed only to root clients "
        f"(this client is uid {uid})",
    )
