"""The AIO work behind a RESTORE or CHECK request: the I/O that feeds ``protocol``.

RESTORE: find the images as CRIU will (``images_access``), open them as a
``decision.checkpoint.Session`` (under the rewrite's lock, an interrupted run
finished first), judge the rings on the kernel of the ``kernel`` setting
(the live one by default), take the one decision (``decision.decide``, intent
RESTORE) and carry it out: hand over, rewrite then hand over, or refuse. A
simulated kernel may refuse, never rewrite (the decision's rule 2).

Principle: criu-aio must never make a restore fail that CRIU alone would have
done. Where our own reading fails (an image we cannot parse, a directory we
cannot open in swrk mode) the request goes to CRIU untouched; we answer only
when we know CRIU would fail (a ring that cannot exist, the budget) or when we
started changing the images and could not finish.
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import ClientError, CriuAioError
from criu_aio_plugin.log import Log
from criu_aio_plugin.rpc import images_access, pids, protocol
from criu_aio_plugin.rpc.protocol import HandOver
from criu_aio_plugin.rpc.transport import PeerCred
from criu_aio_plugin.rpc.wire import RpcRequest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.decision.checkpoint import Session
    from criu_aio_plugin.decision.decide import Decision
    from criu_aio_plugin.decision.model import Judgement
    from criu_aio_plugin.kernel.interface import Kernel
    from criu_aio_plugin.rpc.protocol import Role


def _kernel_for(cp: Session, log: Log, kernel_spec: str | None) -> Kernel:
    """The kernel to judge on, created once the checkpoint is known to hold rings."""
    from criu_aio_plugin.estimator.model import default_store
    from criu_aio_plugin.kernel.select import kernel_from_spec

    burned = pids.steer_clear(pids.needed_pids(cp.dir_fd))
    if burned >= pids.MAX_FORKS:
        log.warning(
            f"pid steering stopped at its cap of {burned} forks: the checkpoint names more "
            "pids right after the pid counter than criu-aio skips for one request"
        )
    elif burned:
        log.info(f"advanced the pid counter by {burned} past pids the checkpoint needs")
    kernel = kernel_from_spec(kernel_spec)
    # Without a per-boot cache the estimator will probe: the live kernel's
    # probe worker takes ~2 ms to start (a double fork), so start it now,
    # after the pid steering (its pids must not be ones the checkpoint
    # needs), while the estimator is imported. With a cache the rings are
    # usually confirmed already and a worker would only cost its fork
    # (measured: +2.5 ms on a warm restore).
    prestart = getattr(kernel, "prestart", None)
    if prestart is not None and not default_store(kernel).has_cache(kernel):
        try:
            prestart()
        except BaseException:
            kernel.close()
            raise
    return kernel


def _decide(cp: Session, kernel: Kernel, log: Log) -> tuple[Judgement, Decision]:
    from criu_aio_plugin.decision.decide import RESTORE, decide

    judgement = cp.judge(kernel)
    for r in judgement.rings:
        log.debug(
            f"{r.ring.file}: ring {r.ring.ring_id:#x} {r.ring.ring_len} bytes nr_req "
            f"{r.ring.nr_req} -> {r.status.name} {r.nr_req} on {kernel.name}"
        )
    return judgement, decide(judgement, RESTORE)


def _hand_over(decision: Decision, kernel: Kernel) -> HandOver:
    if decision.rewrites and not decision.write:
        return HandOver(
            f"{decision.message}; the kernel judged is {kernel.name}, not the live "
            "one: images NOT rewritten"
        )
    return HandOver(decision.message)


def _rewrite(dir_fd: int, kernel: Kernel, log: Log) -> HandOver | protocol.Answer:
    """Under the images' lock: finish an interrupted run, judge again, rewrite."""
    from criu_aio_plugin.decision.checkpoint import Session

    with Session(dir_fd, write=True, log=log.info) as cp:
        for line in cp.recovered:
            log.info(line)
        judgement, decision = _decide(cp, kernel, log)
        if decision.refused:
            return protocol.refuse(decision)
        if not decision.write:
            return _hand_over(decision, kernel)
        log.info(f"{cp.shown}: {decision.message}")
        try:
            outcome = cp.carry_out(judgement, decision, kernel.name)
        except CriuAioError as err:
            return protocol.rewrite_failed(str(err), err.errno)
        except OSError as err:
            return protocol.rewrite_failed(f"{err.strerror} ({err.filename})", err.errno or 0)
        return HandOver(f"{decision.message}: rewrote {', '.join(outcome.files) or 'nothing'}")


def judge_and_fix(
    dir_fd: int, log: Log, kernel_spec: str | None = None
) -> HandOver | protocol.Answer:
    """Judge the rings of the checkpoint open as *dir_fd*; rewrite them when needed.

    The ``fix`` a RESTORE gets before CRIU sees it (and ``criu-aio restore``).
    *kernel_spec* defaults to the ``kernel`` setting. The images are read
    without the rewrite's lock first: a checkpoint whose rings are fine (the
    common case) is handed over without it. A rewrite, or an interrupted
    earlier run, takes the lock and judges again from the images as they are
    then (no probe: every size was just seen).
    """
    from criu_aio_plugin.decision.checkpoint import Session

    try:
        with Session(dir_fd, write=False) as cp:
            if not cp.rings:
                action: HandOver | protocol.Answer = HandOver("no AIO rings in the checkpoint")
            else:
                kernel = _kernel_for(cp, log, kernel_spec)
                try:
                    _, decision = _decide(cp, kernel, log)
                    if decision.refused:
                        action = protocol.refuse(decision)
                    elif decision.write or (kernel.is_live and cp.interrupted):
                        action = _rewrite(dir_fd, kernel, log)
                    else:
                        action = _hand_over(decision, kernel)
                finally:
                    kernel.close()
    except CriuAioError as err:
        return HandOver(f"images not examined, CRIU decides: {err}")
    log.info(f"{images_access.shown_path(dir_fd)}: {action.why}")
    return action


def config_sets_images_dir(path: str | None) -> bool:
    """Whether the RPC config file *path* sets images-dir (see ``peer_files``)."""
    return _sets_images_dir(path, strict=False)


def _sets_images_dir(path: str | None, *, strict: bool) -> bool:
    # peer_files only when there is a file to read: most clients name none.
    if not path:
        return False
    from criu_aio_plugin.rpc import peer_files

    return peer_files.config_sets_images_dir(path, strict=strict)


def preload() -> None:
    """Import everything the AIO work needs (the service does it once, up front).

    Including what the swrk path imports only when needed (ctypes for the probe
    worker, tempfile for a cache folder of a non-root client): the service
    then acts as its client, who may not be able to read this Python's files.
    """
    import select  # noqa: F401
    import tempfile  # noqa: F401

    import criu_aio_plugin.cjson
    import criu_aio_plugin.decision.checkpoint
    import criu_aio_plugin.decision.decide
    import criu_aio_plugin.decision.judge
    import criu_aio_plugin.images.journal
    import criu_aio_plugin.images.mm
    import criu_aio_plugin.images.rewrite
    import criu_aio_plugin.kernel.live
    import criu_aio_plugin.kernel.select
    import criu_aio_plugin.kernel.simulated
    import criu_aio_plugin.kernel.syscalls
    import criu_aio_plugin.rpc.peer_files  # noqa: F401


def restore(req: RpcRequest, peer: PeerCred, log: Log, *, role: Role) -> HandOver | protocol.Answer:
    """Decide a RESTORE: hand over (maybe after a rewrite) or refuse with a reason."""
    service = role == "service"
    if service:
        # Import now, as root: acting as the client we may not be able to read
        # our own installation (a Python under /root, say).
        preload()
    # Every path the request names is read from here on as the client
    # (peer_files): its config file, its images folder, the images in it.
    with images_access.acting_as(peer, enabled=service):
        try:
            sets_images_dir = _sets_images_dir(req.config_file, strict=service)
        except ClientError as err:
            return protocol.images_unusable(str(err), err.errno)
        at = protocol.locate_images(req, sets_images_dir)
        if isinstance(at, HandOver):
            return at
        try:
            dir_fd = images_access.open_images_dir(at, peer)
        except CriuAioError as err:
            if service:
                return protocol.images_unusable(str(err), err.errno)
            return HandOver(f"images not examined, CRIU decides: {err}")
        try:
            if service:
                from criu_aio_plugin.rpc import peer_files

                try:
                    peer_files.screen_images_dir(dir_fd)
                except ClientError as err:
                    return protocol.images_unusable(str(err), err.errno)
            return judge_and_fix(dir_fd, log)
        finally:
            os.close(dir_fd)


def check(log: Log) -> HandOver | protocol.Answer:
    """Decide a CHECK: the AIO check's failure is answered, success hands over.

    What fails it is the ``check_policy`` setting (``$CRIU_AIO_CHECK_POLICY``,
    the config file; a bad value is reported by ``config`` and ignored):
    - ``formula`` (default): any ring size where CRIU's own nr_req formula is
      wrong on this kernel, like ``criu-aio check`` (the answer names the sizes
      and says which of them criu-aio fixes);
    - ``host``: only what criu-aio cannot fix either (sizes that cannot exist on
      this host, the AIO budget, kernel errors). For runtimes that gate
      checkpointing on ``criu check`` and always restore through criu-aio;
    - ``off``: the AIO check is only logged.
    """
    from criu_aio_plugin import config
    from criu_aio_plugin.estimator.check import run_aio_check
    from criu_aio_plugin.kernel.select import kernel_from_spec

    policy = config.current().check_policy
    kernel = kernel_from_spec(None)
    try:
        report = run_aio_check(kernel)
    finally:
        kernel.close()
    log.info(f"AIO check on {kernel.name} (policy {policy}): {report.summary}")
    if policy == "off":
        failure = None
    elif policy == "host":
        failure = None if report.worst.restorable else report.summary
    else:
        failure = report.failure
    return protocol.check_action(failure)
