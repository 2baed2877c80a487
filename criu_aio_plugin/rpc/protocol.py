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
- ``Rewrite``: a RESTORE whose rings need new nr_req values on this kernel.

Nothing here imports protobuf or socket; refusals are encoded by ``wire``.
"""

from __future__ import annotations

import errno as _errno

from criu_aio_plugin.rpc import wire
from criu_aio_plugin.rpc.wire import RpcRequest
from criu_aio_plugin.values import Value

# Imported for the type checker only: typing and collections.abc cost import
# time on the swrk pass-through path (see values.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Literal

    Role = Literal["swrk", "service"]


# Statuses of a ring in a restore plan (criu_aio_plugin.estimator.plan).
FINE = "fine"
REWRITE = "rewrite"
IMPOSSIBLE = "impossible"
BUDGET = "budget"
ERROR = "error"


class HandOver(Value):
    """Exec the real CRIU now; it reads the untouched request."""

    why: str


class Answer(Value):
    """Consume the request, send ``payload`` (criu_resp bytes), do not start CRIU."""

    payload: bytes
    why: str
    errno: int = _errno.EINVAL


class Examine(Value):
    """RESTORE or CHECK: parse the request and do the AIO work before deciding."""

    req_type: int


class Rewrite(Value):
    """Rewrite these rings' nr_req, keyed (mm image file name, ring id), then hand over."""

    new_nr_req: Mapping[tuple[str, int], int]
    why: str


class ImagesAt(Value):
    """Where the request's images are: a descriptor of the peer, or a path."""

    peer_fd: int | None = None
    path: str | None = None


class RingVerdict(Value):
    """One ring of a checkpoint and what the estimator says about it here."""

    image: str
    ring_id: int
    ring_len: int
    stored_nr_req: int
    status: str
    new_nr_req: int = 0
    reason: str = ""


class PlanSummary(Value):
    """A checkpoint's rings judged against one kernel (built from a RestorePlan)."""

    rings: Sequence[RingVerdict]
    kernel_name: str
    kernel_is_live: bool
    budget_needed: int = 0
    headroom: int = 0
    notes: Sequence[str] = ()


def answer(req_type: int, errno: int, message: str) -> Answer:
    """A refusal of a request of *req_type*: criu_resp{success=false}."""
    payload = wire.encode_error_resp(req_type, errno, message)
    return Answer(payload=payload, why=message, errno=errno)


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


def _ring_label(ring: RingVerdict) -> str:
    pages = f", {ring.ring_len // 4096} pages" if ring.ring_len % 4096 == 0 else ""
    size = f"{ring.ring_len} bytes{pages}, nr_req {ring.stored_nr_req}"
    return f"ring {ring.ring_id:#x} in {ring.image} ({size})"


def restore_action(plan: PlanSummary) -> HandOver | Rewrite | Answer:
    """What to do with a RESTORE once its rings are judged on this kernel.

    Any ring that cannot exist, a budget that cannot hold the rings, or an
    estimator error refuses the restore before CRIU starts (CRIU would fail
    anyway, after rebuilding most of the tree). Rings that need a new nr_req
    are rewritten only when the kernel judged is the one the restore runs on.
    """
    bad = [r for r in plan.rings if r.status in (IMPOSSIBLE, ERROR)]
    if bad:
        ring = bad[0]
        more = f" (and {len(bad) - 1} more ring(s))" if len(bad) > 1 else ""
        if ring.status == IMPOSSIBLE:
            msg = (
                f"criu-aio: restore refused before CRIU started: {_ring_label(ring)} "
                f"cannot exist on this host{more}: {ring.reason.rstrip('.')}. "
                "`criu-aio can-restore DIR --profile HOST.json` tells which hosts can."
            )
            return answer(wire.RESTORE, _errno.ERANGE, msg)
        msg = (
            f"criu-aio: restore refused before CRIU started: could not size {_ring_label(ring)}"
            f"{more}: {ring.reason}. See `criu-aio inspect DIR` for details."
        )
        return answer(wire.RESTORE, _errno.EIO, msg)
    over = [r for r in plan.rings if r.status == BUDGET]
    if over or (plan.budget_needed and plan.budget_needed > plan.headroom):
        reason = over[0].reason if over else ""
        msg = (
            "criu-aio: restore refused before CRIU started: the AIO budget cannot hold "
            f"this checkpoint's rings: they need {plan.budget_needed} requests, "
            f"fs.aio-max-nr leaves {plan.headroom}"
            + (f" ({reason})" if reason else "")
            + ". Raise fs.aio-max-nr (sysctl -w fs.aio-max-nr=N) or stop processes "
            "holding AIO contexts, then retry."
        )
        return answer(wire.RESTORE, _errno.EAGAIN, msg)
    todo = {(r.image, r.ring_id): r.new_nr_req for r in plan.rings if r.status == REWRITE}
    if not todo:
        return HandOver(f"{len(plan.rings)} ring(s), all fine on {plan.kernel_name}")
    if not plan.kernel_is_live:
        return HandOver(
            f"{len(todo)} ring(s) would need a new nr_req, but the kernel judged is "
            f"{plan.kernel_name}, not the live one: images NOT rewritten"
        )
    return Rewrite(new_nr_req=todo, why=f"{len(todo)} ring(s) need a new nr_req here")


def rewrite_failed(message: str, errno: int) -> Answer:
    """The rewrite could not be done: refuse, the images are as they were."""
    msg = (
        f"criu-aio: restore refused before CRIU started: rewriting the images failed: "
        f"{message}. The images are unchanged (the rewrite is transactional); fix the "
        "cause or run `criu-aio fix DIR` by hand."
    )
    return answer(wire.RESTORE, errno or _errno.EIO, msg)


def images_unusable(message: str, errno: int) -> Answer:
    """The images could not be found or read as the peer."""
    msg = f"criu-aio: restore refused before CRIU started: {message}"
    return answer(wire.RESTORE, errno or _errno.EIO, msg)


def check_action(failure: str | None) -> HandOver | Answer:
    """CHECK: answer a failed AIO check ourselves, else let CRIU run its own check."""
    if failure is None:
        return HandOver("AIO check passed: CRIU runs its own check")
    return answer(wire.CHECK, _errno.ENOTSUP, f"criu-aio: AIO check failed: {failure}")


def malformed(message: str) -> Answer:
    """A datagram that is not a criu_req (the service answers instead of crashing)."""
    return answer(wire.EMPTY, _errno.EBADMSG, f"criu-aio: malformed request: {message}")
