"""The AIO check: is CRIU's nr_req formula right on this kernel, and if not, can
criu-aio make up for it?

For every ring size from 1 to N pages, io_setup(criu_formula(ring_len)) is asked
of the kernel (one batched round trip). A size is FINE (``criu_aio_plugin.status``)
when that ring has exactly ring_len bytes: CRIU's formula is right for it.
Otherwise the estimator looks for an nr_req that does: REWRITE when it finds one
(criu-aio's restore converges), IMPOSSIBLE when none can exist here (below the
host's smallest ring), BUDGET / ERROR when the kernel refused. N defaults to the
smallest size whose CRIU nr_req reaches 8192 requested events (129 pages with
4 KiB pages).

``run_aio_check`` is pure with respect to its kernel (no printing, no exit), so
the RPC CHECK path and ``criu-aio check`` share it; ``AioCheckReport.summary`` is
one line, fit for cr_errmsg.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from criu_aio_plugin.estimator.converge import RingRequest, estimate_many
from criu_aio_plugin.estimator.model import Knowledge, ModelStore, calibrate
from criu_aio_plugin.kernel.arithmetic import AIO_RING_HEADER, IO_EVENT_SIZE, criu_formula
from criu_aio_plugin.kernel.interface import Kernel, probe_batch
from criu_aio_plugin.status import BUDGET, ERROR, FINE, IMPOSSIBLE, REWRITE, Status, worst

DEFAULT_MIN_EVENTS = 8192

# What each status says about CRIU's formula for one ring size (the summary's words).
FORMULA_TEXT = {
    FINE: "CRIU's formula is right",
    REWRITE: "wrong, criu-aio converges",
    IMPOSSIBLE: "impossible on this host",
    BUDGET: "refused: fs.aio-max-nr",
    ERROR: "io_setup failed",
}


@dataclass(frozen=True)
class SizeResult:
    """One ring size: CRIU's nr_req, the ring it gave here, and its status."""

    pages: int
    ring_len: int
    criu_nr_req: int
    criu_ring_len: int  # 0 when io_setup refused CRIU's value
    status: Status
    nr_req: int = 0  # the nr_req criu-aio would use (fine or rewrite)
    reason: str = ""


@dataclass(frozen=True)
class AioCheckReport:
    kernel_name: str
    page_size: int
    possible_cpus: int
    smallest_ring_len: int
    max_pages: int
    sizes: tuple[SizeResult, ...]
    probes: int = 0

    def pages_of(self, status: Status) -> list[int]:
        return [s.pages for s in self.sizes if s.status is status]

    @property
    def ok(self) -> bool:
        return all(s.status is FINE for s in self.sizes)

    @property
    def worst(self) -> Status:
        """The most severe status of any size (``status.worst``)."""
        return worst(s.status for s in self.sizes)

    @property
    def summary(self) -> str:
        """One line: what is wrong where and why, or that all sizes are right."""
        where = (
            f"on {self.kernel_name} ({self.possible_cpus} possible CPUs, "
            f"{self.page_size}-byte pages)"
        )
        if self.ok:
            return (
                f"CRIU's AIO nr_req formula is right for ring sizes 1-{self.max_pages} "
                f"pages {where}"
            )
        parts = []
        for status in (IMPOSSIBLE, REWRITE, BUDGET, ERROR):
            pages = self.pages_of(status)
            if pages:
                parts.append(f"{FORMULA_TEXT[status]} for {compact_ranges(pages)} pages")
        text = f"CRIU's AIO nr_req formula is wrong {where}: " + "; ".join(parts)
        if self.pages_of(IMPOSSIBLE):
            text += f" (smallest ring here: {self.smallest_ring_len // self.page_size} pages)"
        return text

    @property
    def failure(self) -> str | None:
        """``summary`` when the check failed, else None (what the RPC path answers)."""
        return None if self.ok else self.summary


def compact_ranges(values: Iterable[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``1-3, 5, 7-8``."""
    out: list[str] = []
    run: list[int] = []
    for v in sorted(set(values)):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [v]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def default_max_pages(page_size: int, min_events: int = DEFAULT_MIN_EVENTS) -> int:
    """The smallest ring (pages) whose CRIU nr_req is at least *min_events*."""
    slots_per_page = page_size // IO_EVENT_SIZE
    pages = max(1, (2 * min_events + 2) // slots_per_page)
    while criu_formula(pages * page_size) < min_events:
        pages += 1
    return pages


def run_aio_check(
    kernel: Kernel,
    max_pages: int | None = None,
    knowledge: Knowledge | None = None,
) -> AioCheckReport:
    """Test CRIU's formula for ring sizes 1..*max_pages* pages on *kernel*."""
    know = knowledge if knowledge is not None else ModelStore(persistent=False).load(kernel)
    facts = kernel.facts()
    page = facts.page_size
    top = max_pages if max_pages is not None else default_max_pages(page)
    lengths = [p * page for p in range(1, top + 1)]
    criu_values = [max(1, criu_formula(length)) for length in lengths]
    probes = probe_batch(kernel, criu_values)
    count = len(probes)
    for result in probes:
        if result.ok:
            know.observe(result.nr_req, result.ring_len)
    calib_before = know.calibration_probes
    calibrate(kernel, know)
    count += know.calibration_probes - calib_before
    wrong = [
        RingRequest(length, n)
        for length, n, r in zip(lengths, criu_values, probes, strict=True)
        if r.ring_len != length
    ]
    estimates = dict(zip(wrong, estimate_many(kernel, wrong, know), strict=True))
    count += sum(e.probes for e in estimates.values())
    sizes = []
    for length, n, r in zip(lengths, criu_values, probes, strict=True):
        if r.ring_len == length:
            sizes.append(SizeResult(length // page, length, n, r.ring_len, FINE, n))
            continue
        est = estimates[RingRequest(length, n)]
        # CRIU's value did not give the ring, so an nr_req found is another one.
        status = REWRITE if est.ok else est.status
        sizes.append(
            SizeResult(length // page, length, n, r.ring_len, status, est.nr_req, est.reason)
        )
    smallest = know.observed.get(1, 0)
    return AioCheckReport(
        kernel_name=kernel.name,
        page_size=page,
        possible_cpus=facts.possible_cpus,
        smallest_ring_len=smallest,
        max_pages=top,
        sizes=tuple(sizes),
        probes=count,
    )


def slots(ring_len: int) -> int:
    """Header ``nr`` of a ring of *ring_len* bytes (for tables)."""
    return (ring_len - AIO_RING_HEADER) // IO_EVENT_SIZE
