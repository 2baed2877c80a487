"""A simulated kernel: the kernels this machine cannot boot, as a first-class Kernel.

It answers io_setup(n) the way fs/aio.c does for its parameters
(``RingArithmetic``: doubling or not, per-CPU floor, page size, header and event
sizes), including the error paths that matter to the estimator:

- ``n == 0`` -> EINVAL (sys_io_setup);
- more than 0x10000000 / sizeof(struct io_event) events after floor and
  doubling -> EINVAL (ioctx_alloc's overflow guard);
- ``n > aio-max-nr``, or ``aio-nr + n > aio-max-nr`` -> EAGAIN. Since Linux 4.12
  (commit 2a8a98673c13) fs.aio-nr is charged the caller's n, not the doubled
  count; the section-3 measurements here confirm it on 6.18.

By default a probe's context is gone as soon as it is answered, so probing
never eats the budget: that is what the live kernel's probe worker achieves by
retiring itself and retrying when its own contexts cause EAGAIN.
``probes_hold_budget=True`` keeps every probe context charged until ``close()``,
to test callers against a prober that does not.
Presets cover the hosts the project is tested against (``PRESETS``).
"""

from __future__ import annotations

import errno as _errno
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from criu_aio_plugin.kernel.arithmetic import RingArithmetic
from criu_aio_plugin.kernel.interface import HostFacts, RingProbe

DEFAULT_AIO_MAX_NR = 65536  # the kernel's default fs.aio-max-nr
_MAX_EVENTS = 0x10000000  # ioctx_alloc: nr_events > 0x10000000 / sizeof(io_event) -> EINVAL


@dataclass
class SimulatedKernel:
    """A kernel defined by its ring arithmetic and its AIO budget.

    ``probes`` counts every io_setup answered (tests and benchmarks read it);
    ``probe_log`` keeps the requested values in order.
    """

    arithmetic: RingArithmetic = field(default_factory=RingArithmetic)
    aio_max_nr: int = DEFAULT_AIO_MAX_NR
    base_aio_nr: int = 0  # charged by "other processes" on the simulated host
    release: str = "simulated"
    machine: str = "x86_64"
    label: str = ""
    probes_hold_budget: bool = False
    probes: int = 0
    probe_log: list[int] = field(default_factory=list)
    _held: list[int] = field(default_factory=list)

    # -- Kernel protocol -------------------------------------------------
    @property
    def name(self) -> str:
        return self.label or spec_of(self)

    @property
    def is_live(self) -> bool:
        return False

    def facts(self) -> HostFacts:
        return HostFacts(
            kernel_release=self.release,
            boot_id=self._boot_id(),
            page_size=self.arithmetic.page_size,
            possible_cpus=self.arithmetic.possible_cpus,
            aio_max_nr=self.aio_max_nr,
            aio_nr=self.aio_nr,
            machine=self.machine,
        )

    def probe(self, nr_req: int) -> RingProbe:
        self.probes += 1
        self.probe_log.append(nr_req)
        a = self.arithmetic
        if nr_req <= 0:
            return RingProbe(nr_req=nr_req, errno=_errno.EINVAL)
        if a.effective_events(nr_req) > _MAX_EVENTS // a.event:
            return RingProbe(nr_req=nr_req, errno=_errno.EINVAL)
        if nr_req > self.aio_max_nr or self.aio_nr + nr_req > self.aio_max_nr:
            return RingProbe(nr_req=nr_req, errno=_errno.EAGAIN)
        if self.probes_hold_budget:
            self._held.append(nr_req)
        return RingProbe(nr_req=nr_req, ring_len=a.ring_len(nr_req), nr=a.ring_nr(nr_req))

    def probe_many(self, nr_reqs: Sequence[int]) -> list[RingProbe]:
        return [self.probe(n) for n in nr_reqs]

    def close(self) -> None:
        self._held.clear()

    # -- simulation helpers ----------------------------------------------
    @property
    def aio_nr(self) -> int:
        return self.base_aio_nr + sum(self._held)

    @property
    def held(self) -> int:
        """Contexts created by probes and not yet released."""
        return len(self._held)

    def _boot_id(self) -> str:
        digest = hashlib.sha256(repr((self.arithmetic, self.release)).encode()).hexdigest()
        return f"sim-{digest[:16]}"

    def with_budget(self, aio_max_nr: int, aio_nr: int = 0) -> SimulatedKernel:
        """The same kernel with another fs.aio-max-nr / fs.aio-nr (fresh counters)."""
        return replace(
            self, aio_max_nr=aio_max_nr, base_aio_nr=aio_nr, probes=0, probe_log=[], _held=[]
        )


def modern(cpus: int, page: int = 4096, **kw: Any) -> SimulatedKernel:
    """A v3.11+ kernel: doubling and a floor of 4 events per possible CPU."""
    return SimulatedKernel(
        arithmetic=RingArithmetic(page_size=page, doubling=True, possible_cpus=cpus),
        release="sim-modern",
        **kw,
    )


def v3_10(cpus: int = 2, page: int = 4096, **kw: Any) -> SimulatedKernel:
    """A v3.10-style kernel: no doubling and no per-CPU floor."""
    return SimulatedKernel(
        arithmetic=RingArithmetic(
            page_size=page, doubling=False, possible_cpus=cpus, floor_per_cpu=0
        ),
        release="sim-3.10",
        **kw,
    )


# name -> factory. The spec grammar (kernel.select) accepts these after `sim:`.
PRESETS: dict[str, Callable[[], SimulatedKernel]] = {
    "modern": lambda: modern(2),
    "x86-1": lambda: modern(1),
    "x86-2": lambda: modern(2),
    "x86-16": lambda: modern(16),
    "x86-64": lambda: modern(64),
    "x86-88": lambda: modern(88),
    "x86-4096": lambda: modern(4096),
    "v3.10": lambda: v3_10(),
    "arm64-64k": lambda: modern(4, page=65536, machine="aarch64"),
    "ppc64-64k": lambda: modern(88, page=65536, machine="ppc64le"),
}


def spec_of(kernel: SimulatedKernel) -> str:
    """A ``sim:`` spec that rebuilds *kernel*'s arithmetic (kernel.select grammar)."""
    a = kernel.arithmetic
    parts = [
        f"cpus={a.possible_cpus}",
        f"doubling={int(a.doubling)}",
        f"floor_per_cpu={a.floor_per_cpu}",
        f"page={a.page_size}",
    ]
    defaults = RingArithmetic()
    extra = {
        k: getattr(a, k)
        for k in ("header", "event", "extra_slots")
        if getattr(a, k) != getattr(defaults, k)
    }
    parts += [f"{k}={v}" for k, v in extra.items()]
    if kernel.aio_max_nr != DEFAULT_AIO_MAX_NR:
        parts.append(f"aio_max_nr={kernel.aio_max_nr}")
    if kernel.base_aio_nr:
        parts.append(f"aio_nr={kernel.base_aio_nr}")
    return "sim:" + ",".join(parts)
