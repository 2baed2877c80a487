"""The narrow interface between criu-aio and a kernel, and the values it returns.

Everything above ``criu_aio_plugin.kernel`` (the estimator, the check, the
interposer's decisions) talks to a ``Kernel``. Implementations: the live kernel
(ctypes io_setup in this process), a simulated kernel (parameters, for kernels
this machine cannot boot) and an agent kernel (a probe program over a pipe).
"""

from __future__ import annotations

from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Protocol, runtime_checkable
else:
    # At run time the protocols below are plain classes whose isinstance()
    # looks for every member the class declares, as typing's
    # runtime_checkable does, without importing typing (lean core).

    class _Structural(type):
        def __instancecheck__(cls, obj: object) -> bool:
            return all(hasattr(obj, name) for name in cls.__dict__.get("_members", ()))

    class Protocol(metaclass=_Structural):
        pass

    def runtime_checkable(cls: type) -> type:
        cls._members = tuple(  # type: ignore[attr-defined]
            name for name in vars(cls) if not name.startswith("_")
        )
        return cls


class HostFacts(Value):
    """What a kernel tells about itself that bears on AIO rings (a frozen value)."""

    kernel_release: str
    boot_id: str
    page_size: int
    possible_cpus: int
    aio_max_nr: int
    aio_nr: int
    machine: str = "x86_64"

    @property
    def aio_headroom(self) -> int:
        """How many more requested events fs.aio-max-nr admits right now."""
        return max(0, self.aio_max_nr - self.aio_nr)


class RingProbe(Value):
    """The outcome of one io_setup(nr_req): the ring it created, or the errno.

    ``errno`` is 0 on success; then ``ring_len`` is the mapping length and ``nr``
    the header's slot count (the value CRIU's restorer compares).
    """

    nr_req: int
    ring_len: int = 0
    nr: int = 0
    errno: int = 0

    @property
    def ok(self) -> bool:
        return self.errno == 0


@runtime_checkable
class Kernel(Protocol):
    """A kernel that can be asked what ring io_setup(n) creates."""

    @property
    def name(self) -> str:
        """Short description for logs and reports, e.g. ``live`` or ``sim:cpus=64``."""
        ...

    @property
    def is_live(self) -> bool:
        """True only when answers come from the kernel restores will run on.

        Image rewrites are allowed only then: a decision made against a
        simulated or remote kernel may refuse, never rewrite.
        """
        ...

    def facts(self) -> HostFacts:
        """Host facts (cached where they cannot change; aio_nr is read fresh)."""
        ...

    def probe(self, nr_req: int) -> RingProbe:
        """io_setup(nr_req) and report the ring; errno set instead of raising.

        Implementations must not wait for context teardown on this path
        (io_destroy costs ~32 ms of RCU grace period on the live kernel).
        """
        ...

    def close(self) -> None:
        """Release every context created by probing."""
        ...


@runtime_checkable
class BatchProber(Protocol):
    """A kernel that probes several nr_req values in one round trip (optional)."""

    def probe_many(self, nr_reqs: Sequence[int]) -> list[RingProbe]:
        """``[probe(n) for n in nr_reqs]`` at the cost of one round trip."""
        ...


@runtime_checkable
class BudgetSettler(Protocol):
    """A kernel whose probes hold fs.aio-nr budget until their teardown (optional).

    ``settle(need)`` makes sure at least *need* requested events fit under
    fs.aio-max-nr once probing is done, waiting for the probes' teardown only
    when the headroom left would otherwise be too small. Returns the seconds
    spent waiting (0.0 on the fast path).
    """

    def settle(self, need: int) -> float: ...


def probe_batch(kernel: Kernel, nr_reqs: Sequence[int]) -> list[RingProbe]:
    """Probe every value in *nr_reqs*, in one round trip when the kernel can."""
    if not nr_reqs:
        return []
    if isinstance(kernel, BatchProber):
        return kernel.probe_many(nr_reqs)
    return [kernel.probe(n) for n in nr_reqs]


def settle_budget(kernel: Kernel, need: int) -> float:
    """``kernel.settle(need)`` for kernels that hold budget; 0.0 for the others."""
    if isinstance(kernel, BudgetSettler):
        return kernel.settle(need)
    return 0.0
