"""What the interposer does with a request: pure decisions, no I/O.

Shaped like h11's Connection: facts in, decision out. The socket and exec
layer (``transport``, ``swrk``, ``service``) gathers the facts (the peeked
datagram, the parsed request, the estimator's plan) and carries the decision
out. Decisions:

- ``HandOver``: exec the real CRIU on the socket; the request stays unread, so
  CRIU reads exactly what the client sent (CRIU peeks with MSG_TRUNC for the
  size, then reads; see criu/cr-service.c recv_criu_msg).
- ``Answer``: consume the request, send ``payload`` (a criu_resp with
  success=false) and stop: CRIU never starts.
- ``Examine``: RESTORE or CHECK; parse it and do the AIO work first.

Whether a RESTORE is refused, and which rings are rewritten, is not decided
here: ``criu_aio_plugin.decision.decide`` decides for every entry point;
``refuse`` only turns its refusal into a criu_resp.

Nothing here imports protobuf or socket; refusals are encoded by ``wire``.
"""

from __future__ import annotations

import errno as _errno

from criu_aio_plugin.rpc import wire
from criu_aio_plugin.rpc.wire import RpcRequest
from criu_aio_plugin.values import Value

# Lean core (docs/architecture.md): typing for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from criu_aio_plugin.decision.decide import Decision
    from criu_aio_plugin.status import Status

    Role = Literal["swrk", "service"]


class HandOver(Value):
    """Exec the real CRIU now; it reads the untouched request."""

    why: str


class Answer(Value):
    """Consume the request, send ``payload`` (criu_resp bytes), do not start CRIU.

    ``status`` says why, in the one status vocabulary (``criu_aio_plugin.status``):
    IMPOSSIBLE or BUDGET for a refused restore, ERROR for everything else.
    """

    payload: bytes
    why: str
    errno: int
    status: Status


class Examine(Value):
    """RESTORE or CHECK: parse the request and do the AIO work before deciding."""

    req_type: int


class ImagesAt(Value):
    """Where the request's images are: a descriptor of the peer, or a path."""

    peer_fd: int | None = None
    path: str | None = None


def answer(req_type: int, errno: int, message: str, status: Status | None = None) -> Answer:
    """A refusal of a request of *req_type*: criu_resp{success=false}; status ERROR
    unless said (imported here: a pass-through never answers, nor needs statuses)."""
    from criu_aio_plugin.status import ERROR

    payload = wire.encode_error_resp(req_type, errno, message)
    return Answer(payload=payload, why=message, errno=errno, status=status or ERROR)


def first_step(head: wire.RequestHead, role: Role) -> HandOver | Examine:
    """The decision on the raw first datagram.

    The swrk pass-through must stay cheap, so only RESTORE and CHECK are
    examined there. The service examines everything: it has to refuse what
    `criu service` refuses, which needs the options.
    """
    if head.req_type in (wire.RESTORE, wire.CHECK) or role == "service":
        return Examine(head.req_type)
    return HandOver(f"{head.name}: nothing for criu-aio to do")


def screen(req: RpcRequest, role: Role) -> Answer | None:
    """Refuse what the real CRIU would refuse in this role but not in the worker we exec.

    The service execs ``criu swrk`` for each connection, and CRIU allows
    rst_sibling, inherit_fd and a page-server fd only in swrk mode
    (criu/cr-service.c checks opts.swrk_restore), so the service must refuse
    them itself, with CRIU's wording.
    """
    if role != "service":
        return None
    what = None
    if req.rst_sibling is not None:
        what = "rst_sibling"
    elif req.inherit_fd_keys:
        what = "inherit_fd"
    elif req.page_server_fd is not None:
        what = "a page server fd"
    if what is None:
        return None
    return answer(req.req_type, _errno.EBADRQC, f"{what} is not allowed in standalone service")


def locate_images(req: RpcRequest, config_sets_images_dir: bool = False) -> ImagesAt | HandOver:
    """Where CRIU will look for the images of *req* (same order as CRIU's
    resolve_images_dir_path: images_dir_fd, then images_dir).

    An RPC config file (``config_file``; runc always names /etc/criu/runc.conf)
    overrides both when it sets images-dir; the caller reads it and says so.
    Without a location, or when the config file moves the images, CRIU is the
    authority: hand over and let it answer as it always does.
    """
    if config_sets_images_dir:
        return HandOver(
            f"config_file {req.config_file!r} sets images-dir; criu-aio does not "
            "follow CRIU config files, images left as they are"
        )
    if req.images_dir_fd != -1:
        return ImagesAt(peer_fd=req.images_dir_fd)
    if req.images_dir:
        return ImagesAt(path=req.images_dir)
    return HandOver("no images_dir_fd nor images_dir: CRIU answers that itself")


REFUSED = "criu-aio: restore refused before CRIU started: "


def refuse(decision: Decision) -> Answer:
    """A RESTORE the decision refuses: its message, errno and status in a criu_resp."""
    return answer(wire.RESTORE, decision.errno, REFUSED + decision.message, decision.status)


def rewrite_failed(message: str, errno: int) -> Answer:
    """The rewrite could not be done: refuse, the images are as they were."""
    msg = (
        f"{REFUSED}rewriting the images failed: "
        f"{message}. The images are unchanged (the rewrite is transactional); fix the "
        "cause or run `criu-aio fix DIR` by hand."
    )
    return answer(wire.RESTORE, errno or _errno.EIO, msg)


def images_unusable(message: str, errno: int) -> Answer:
    """The images could not be found or read as the peer."""
    msg = f"{REFUSED}{message}"
    return answer(wire.RESTORE, errno or _errno.EIO, msg)


def check_action(failure: str | None) -> HandOver | Answer:
    """CHECK: answer a failed AIO check ourselves, else let CRIU run its own check."""
    if failure is None:
        return HandOver("AIO check passed: CRIU runs its own check")
    return answer(wire.CHECK, _errno.ENOTSUP, f"criu-aio: AIO check failed: {failure}")


def malformed(message: str) -> Answer:
    """A datagram that is not a criu_req (the service answers instead of crashing)."""
    return answer(wire.EMPTY, _errno.EBADMSG, f"criu-aio: malformed request: {message}")
