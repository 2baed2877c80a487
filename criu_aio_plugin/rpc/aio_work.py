"""The AIO work behind a RESTORE or CHECK request: the I/O that feeds ``protocol``.

RESTORE: find the images as CRIU will (``images_access``), read their rings,
judge them on the kernel chosen by ``$CRIU_AIO_KERNEL`` (the live one by
default) with the estimator's ``plan_rings``, let ``protocol.restore_action``
decide, and carry out a rewrite with the image module's transactional
``apply_fix``. A simulated kernel may refuse, never rewrite (``Kernel.is_live``).

Principle: criu-aio must never make a restore fail that CRIU alone would have
done. Where our own reading fails (an image we cannot parse, a directory we
cannot open in swrk mode) the request goes to CRIU untouched; we answer only
when we know CRIU would fail (a ring that cannot exist, the budget) or when we
started changing the images and could not finish.
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import CriuAioError
from criu_aio_plugin.rpc import images_access, pids, protocol
from criu_aio_plugin.rpc.log import Log
from criu_aio_plugin.rpc.protocol import HandOver, PlanSummary, RingVerdict
from criu_aio_plugin.rpc.transport import PeerCred
from criu_aio_plugin.rpc.wire import RpcRequest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.estimator.plan import RestorePlan
    from criu_aio_plugin.kernel.interface import Kernel
    from criu_aio_plugin.rpc.protocol import Role


def summarize(plan: RestorePlan, kernel: Kernel) -> PlanSummary:
    """The estimator's plan as the plain values ``protocol`` decides on."""
    rings = tuple(
        RingVerdict(
            image=d.ring.file,
            ring_id=d.ring.ring_id,
            ring_len=d.ring.ring_len,
            stored_nr_req=d.ring.nr_req,
            status=d.status,
            new_nr_req=d.estimate.nr_req,
            reason=d.estimate.reason,
        )
        for d in plan.decisions
    )
    return PlanSummary(
        rings=rings,
        kernel_name=kernel.name,
        kernel_is_live=kernel.is_live,
        budget_needed=plan.budget_needed,
        headroom=plan.headroom,
    )


def _judge(
    dir_fd: int, log: Log, kernel_spec: str | None = None
) -> tuple[HandOver | protocol.Answer | protocol.Rewrite, Kernel | None]:
    from criu_aio_plugin.images.mm import read_rings
    from criu_aio_plugin.kernel.select import kernel_from_spec

    rings = read_rings(dir_fd)
    if not rings:
        return HandOver("no AIO rings in the checkpoint"), None
    burned = pids.steer_clear(pids.needed_pids(dir_fd))
    if burned:
        log.info(f"advanced the pid counter by {burned} past pids the checkpoint needs")
    kernel = kernel_from_spec(kernel_spec)
    try:
        # Without a per-boot cache the estimator will probe: the live kernel's
        # probe worker takes ~2 ms to start (a double fork), so start it now,
        # after the pid steering (its pids must not be ones the checkpoint
        # needs), while the estimator is imported and the images' sizes are
        # looked up. With a cache the rings are usually confirmed already and a
        # worker would only cost its fork (measured: +2.5 ms on a warm restore).
        # Not before the rings are read: a checkpoint without rings needs no worker.
        # judge_and_fix closes the kernel, reaping the intermediate child.
        from criu_aio_plugin.estimator.model import default_store

        store = default_store(kernel)
        prestart = getattr(kernel, "prestart", None)
        if prestart is not None and not store.has_cache(kernel):
            prestart()
        from criu_aio_plugin.estimator.plan import plan_rings

        plan = plan_rings(kernel, rings, store=store)
        summary = summarize(plan, kernel)
        for ring in summary.rings:
            log.debug(
                f"{ring.image}: ring {ring.ring_id:#x} {ring.ring_len} bytes nr_req "
                f"{ring.stored_nr_req} -> {ring.status} {ring.new_nr_req} on {kernel.name}"
            )
        return protocol.restore_action(summary), kernel
    except BaseException:
        kernel.close()
        raise


def _rewrite(
    dir_fd: int, action: protocol.Rewrite, kernel: Kernel, log: Log
) -> HandOver | protocol.Answer:
    from criu_aio_plugin.images.rewrite import apply_fix

    try:
        result = apply_fix(
            dir_fd, action.new_nr_req, host=kernel.facts(), kernel_name=kernel.name, log=log.info
        )
    except CriuAioError as err:
        return protocol.rewrite_failed(str(err), err.errno)
    except OSError as err:
        return protocol.rewrite_failed(f"{err.strerror} ({err.filename})", err.errno or 0)
    return HandOver(f"{action.why}: rewrote {', '.join(result.files) or 'nothing'}")


def judge_and_fix(
    dir_fd: int, log: Log, kernel_spec: str | None = None
) -> HandOver | protocol.Answer:
    """Judge the rings of the checkpoint open as *dir_fd*; rewrite them when needed.

    The ``fix`` a RESTORE gets before CRIU sees it (and ``criu-aio restore``, and
    the service's warm helper). *kernel_spec* defaults to $CRIU_AIO_KERNEL.
    """
    kernel: Kernel | None = None
    try:
        try:
            action, kernel = _judge(dir_fd, log, kernel_spec)
        except CriuAioError as err:
            return HandOver(f"images not examined, CRIU decides: {err}")
        where = images_access.shown_path(dir_fd)
        if isinstance(action, protocol.Rewrite):
            assert kernel is not None
            log.info(f"{where}: {action.why} on {kernel.name}")
            return _rewrite(dir_fd, action, kernel, log)
        if kernel is not None:
            log.info(f"{where}: {action.why} (kernel {kernel.name})")
        return action
    finally:
        if kernel is not None:
            kernel.close()


def config_sets_images_dir(path: str | None) -> bool:
    """Whether the RPC config file *path* sets images-dir (a missing file sets nothing).

    CRIU config files hold one option per line, with or without leading
    dashes (``images-dir /x``, ``--images-dir=/x``, ``-D /x``); # starts a comment.
    An unreadable file counts as setting it: we cannot know.
    """
    if not path:
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip().lstrip("-").split("=", 1)[0].split(None, 1)
        if word and word[0] in ("images-dir", "D"):
            return True
    return False


def preload() -> None:
    """Import everything the AIO work needs (the service does it once, up front).

    Including what the swrk path imports only when needed (ctypes for the probe
    worker, tempfile for a cache folder of a non-root client): the service
    then acts as its client, who may not be able to read this Python's files.
    """
    import tempfile  # noqa: F401

    import criu_aio_plugin.cjson
    import criu_aio_plugin.estimator.plan
    import criu_aio_plugin.images.mm
    import criu_aio_plugin.images.rewrite
    import criu_aio_plugin.kernel.live
    import criu_aio_plugin.kernel.select
    import criu_aio_plugin.kernel.simulated
    import criu_aio_plugin.kernel.syscalls  # noqa: F401


def restore(req: RpcRequest, peer: PeerCred, log: Log, *, role: Role) -> HandOver | protocol.Answer:
    """Decide a RESTORE: hand over (maybe after a rewrite) or refuse with a reason."""
    at = protocol.locate_images(req, config_sets_images_dir(req.config_file))
    if isinstance(at, HandOver):
        return at
    if role == "service":
        # Import now, as root: acting as the client we may not be able to read
        # our own installation (a Python under /root, say).
        preload()
    with images_access.acting_as(peer, enabled=role == "service"):
        try:
            dir_fd = images_access.open_images_dir(at, peer)
        except CriuAioError as err:
            if role == "service":
                return protocol.images_unusable(str(err), err.errno)
            return HandOver(f"images not examined, CRIU decides: {err}")
        try:
            return judge_and_fix(dir_fd, log)
        finally:
            os.close(dir_fd)


CHECK_POLICIES = ("formula", "host", "off")


def check(log: Log) -> HandOver | protocol.Answer:
    """Decide a CHECK: the AIO check's failure is answered, success hands over.

    What fails it is ``$CRIU_AIO_CHECK_POLICY``:
    - ``formula`` (default): any ring size where CRIU's own nr_req formula is
      wrong on this kernel, like ``criu-aio check`` (the answer names the sizes
      and says which of them criu-aio fixes);
    - ``host``: only what criu-aio cannot fix either (sizes that cannot exist on
      this host, the AIO budget, kernel errors). For runtimes that gate
      checkpointing on ``criu check`` and always restore through criu-aio;
    - ``off``: the AIO check is only logged.
    """
    from criu_aio_plugin.estimator.check import FIXABLE, RIGHT, run_aio_check
    from criu_aio_plugin.kernel.select import kernel_from_spec

    policy = os.environ.get("CRIU_AIO_CHECK_POLICY", "formula") or "formula"
    if policy not in CHECK_POLICIES:
        log.warning(
            f"CRIU_AIO_CHECK_POLICY={policy!r} is not one of {CHECK_POLICIES}; using formula"
        )
        policy = "formula"
    kernel = kernel_from_spec(None)
    try:
        report = run_aio_check(kernel)
    finally:
        kernel.close()
    log.info(f"AIO check on {kernel.name} (policy {policy}): {report.summary}")
    if policy == "off":
        failure = None
    elif policy == "host":
        failure = None if report.worst in (RIGHT, FIXABLE) else report.summary
    else:
        failure = report.failure
    return protocol.check_action(failure)
