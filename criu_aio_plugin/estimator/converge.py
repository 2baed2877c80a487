"""The convergence estimator: which nr_req makes io_setup build a given ring here.

How it works. The kernel's answer to io_setup(n) is a ring whose length f(n)
never shrinks as n grows: fs/aio.c floors n at 4 * possible CPUs, doubles it
(since v3.11), adds 2 slots and rounds header + slots up to whole pages. f is a
step function, so the nr_req values that reproduce a ring of L bytes form one
interval (maybe empty), and a search on f finds it or proves it empty.

For a ring of L bytes, with the nr_req CRIU stored in the image:

1. Answers without io_setup: L is not a multiple of the page size
   (impossible); the stored n was already observed this boot to give L (exact).
2. First guess, confirmed by one io_setup (none when observed this boot): the
   stored n when the model agrees it gives L (then the image stays as it is),
   else the model's smallest n for L (least fs.aio-nr charge; never another n
   that this boot happened to observe, so the answer is the same on every run
   and in every host profile), else without a model an n observed to give L,
   else CRIU's formula. A cold start guesses with a modern kernel's arithmetic,
   then plans again with the model fitted to the calibration probes.
3. Converge when the guess misses: gallop away from the guess with doubling
   steps (g+1, g+2, g+4, ... or g-1, g-2, g-4, ...) until f crosses L, which
   brackets the boundary; then bisect the bracket. Cost: 1 + 2*ceil(log2(d))
   probes for a guess d away from the answer.
4. Statuses (``criu_aio_plugin.status``): FINE when the stored n gives L,
   REWRITE when another n does; IMPOSSIBLE when even io_setup(1) makes a bigger ring (the
   per-CPU floor: the reason names the smallest ring and the possible-CPU count)
   or when f jumps over L; BUDGET when the n that could give L is refused with
   EAGAIN (fs.aio-max-nr; the reason names aio-max-nr, aio-nr and the n needed);
   ERROR for any other errno. EINVAL above the kernel's overflow guard just means
   "too big" to the search.

``estimate_many`` sends the first guesses of many rings in one batch, so when
the model is right a checkpoint costs one io_setup per distinct ring size, all in
one round trip, and nothing at all for ring sizes confirmed earlier this boot.
"""

from __future__ import annotations

import errno as _errno
import os

from criu_aio_plugin.estimator.model import (
    Knowledge,
    RingModel,
    calibration_points,
    fit_model,
    prior_model,
)
from criu_aio_plugin.estimator.types import Estimate
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.interface import HostFacts, Kernel, RingProbe, probe_batch
from criu_aio_plugin.status import BUDGET, ERROR, FINE, IMPOSSIBLE, REWRITE, Status
from criu_aio_plugin.values import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_TOO_BIG = -1  # EINVAL: past io_setup's overflow guard
_NO_BUDGET = -2  # EAGAIN: fs.aio-max-nr refuses this n now
_ABS_MAX_NR = 0xFFFFFFFF  # io_setup takes an unsigned int


class _ProbeFailed(Exception):
    def __init__(self, probe: RingProbe) -> None:
        super().__init__(probe.nr_req)
        self.probe = probe


class RingRequest(Value):
    """One ring to estimate: its length and the nr_req its image holds (if any).

    ``smallest`` asks for the smallest nr_req that gives the ring (least
    fs.aio-nr charge) even when another value is already confirmed: used to
    fit a tight budget.
    """

    ring_len: int
    stored_nr_req: int | None = None
    smallest: bool = False


class _Session:
    """One kernel, its knowledge, and the probes spent (shared by many estimates)."""

    def __init__(self, kernel: Kernel, knowledge: Knowledge) -> None:
        self.kernel = kernel
        self.know = knowledge
        self.facts: HostFacts = kernel.facts()
        self.probes = 0
        self._refused: dict[int, int] = {}  # n -> errno seen this session

    @property
    def model(self) -> RingModel | None:
        return self.know.model

    def record(self, result: RingProbe) -> int:
        if result.ok:
            self.know.observe(result.nr_req, result.ring_len)
            return result.ring_len
        self._refused[result.nr_req] = result.errno
        return self._code(result)

    @staticmethod
    def _code(result: RingProbe) -> int:
        if result.errno == _errno.EINVAL:
            return _TOO_BIG
        if result.errno == _errno.EAGAIN:
            return _NO_BUDGET
        raise _ProbeFailed(result)

    def known(self, n: int) -> int | None:
        if n in self.know.observed:
            return self.know.observed[n]
        if n in self._refused:
            return self._code(RingProbe(nr_req=n, errno=self._refused[n]))
        return None

    def f(self, n: int) -> int:
        """The ring length io_setup(n) gives, or _TOO_BIG / _NO_BUDGET."""
        seen = self.known(n)
        if seen is not None:
            return seen
        self.probes += 1
        return self.record(self.kernel.probe(n))

    def prefetch(self, ns: Sequence[int]) -> set[int]:
        """Probe every unknown n in *ns* in one round trip; returns those probed."""
        todo = sorted({n for n in ns if self.known(n) is None})
        for result in probe_batch(self.kernel, todo):
            self.probes += 1
            try:  # noqa: SIM105 - contextlib stays off the restore path
                self.record(result)
            except _ProbeFailed:
                pass  # reported when an estimate asks
        return set(todo)


class _Estimation:
    def __init__(
        self, session: _Session, ring_len: int, stored: int | None, smallest: bool = False
    ) -> None:
        self.smallest = smallest
        self.s = session
        self.L = ring_len
        self.stored = stored if stored is not None and 0 < stored <= _ABS_MAX_NR else None
        self.start = session.probes

    # -- helpers -----------------------------------------------------------
    @property
    def spent(self) -> int:
        return self.s.probes - self.start

    def _pages(self, length: int) -> str:
        page = self.s.facts.page_size
        count = length // page
        return f"{count} page{'s' if count != 1 else ''}"

    def _smallest(self) -> int:
        return self.s.f(1)

    def _result(self, status: Status, n: int = 0, reason: str = "", **kw: int | str) -> Estimate:
        facts = self.s.facts
        try:
            smallest = self.s.known(1) or 0
        except _ProbeFailed:
            smallest = 0
        return Estimate(
            ring_len=self.L,
            nr_req=n,
            status=status,
            probes=self.spent,
            reason=reason,
            smallest_ring_len=max(smallest, 0),
            possible_cpus=facts.possible_cpus,
            **kw,  # type: ignore[arg-type]
        )

    # -- the steps -----------------------------------------------------------
    def first_guess(self) -> tuple[int, str] | Estimate:
        """Step 1 and 2 of the module doc: an answer, or the n to probe first."""
        L, s = self.L, self.s
        page = s.facts.page_size
        if L <= 0 or L % page:
            return self._result(
                IMPOSSIBLE,
                reason=f"a ring of {L} bytes is not a whole number of this host's "
                f"{page}-byte pages: no io_setup can map it",
            )
        if self.stored is not None and s.know.observed.get(self.stored) == L:
            return self._exact(self.stored, "confirmed")
        model = s.model
        if self.stored is not None and (model is None or model.ring_len(self.stored) == L):
            return self.stored, "stored"
        if model is not None:
            span = model.nr_req_range(L)
            if span is not None:
                # The model's least n, even when another n was seen to give L
                # this boot: the answer must not depend on what this boot
                # happened to probe (can-restore on a host's profile names the
                # nr_req that host's restore writes), and it charges fs.aio-nr
                # least. No probe once it was seen itself.
                return span[0], "confirmed" if s.know.observed.get(span[0]) == L else "model"
        seen = sorted(n for n, length in s.know.observed.items() if length == L)
        if seen:
            return self._exact(seen[0], "confirmed")
        if model is not None:
            below = model.first_at_least(L)
            if below is None:
                return model.max_nr_req, "model"
            return max(1, below - 1), "model"
        return max(1, criu_formula(L)), "formula"

    def _exact(self, n: int, source: str) -> Estimate:
        return self._result(FINE if n == self.stored else REWRITE, n, source=source)

    def run(self, guess: int, source: str) -> Estimate:
        try:
            length = self.s.f(guess)
            if length == self.L:
                return self._exact(guess, source)
            return self._converge(guess, length)
        except _ProbeFailed as failure:
            err = failure.probe.errno
            name = _errno.errorcode.get(err, str(err))
            return self._result(
                ERROR,
                reason=f"io_setup({failure.probe.nr_req}) failed on {self.s.kernel.name}: "
                f"{os.strerror(err)} ({name})",
            )

    def _converge(self, g: int, at_g: int) -> Estimate:
        L = self.L
        f = self.s.f
        cap = self.s.model.max_nr_req if self.s.model else _ABS_MAX_NR
        if at_g == _NO_BUDGET:
            # Everything above the headroom is refused now: probe the largest n
            # admitted. If even that ring is too small, the budget is the answer.
            room = self.s.kernel.facts().aio_headroom
            if 1 <= room < g:
                r = f(room)
                if r == L:
                    return self._exact(room, "converged")
                if 0 < r < L:
                    return self._budget(self._model_needed(room + 1))
                g, at_g = room, r
        if at_g in (_TOO_BIG, _NO_BUDGET) or at_g > L:
            hi, step = g, 1
            while True:  # gallop down
                n = max(1, g - step)
                r = f(n)
                if r == L:
                    return self._exact(n, "converged")
                if 0 < r < L:
                    lo = n
                    break
                hi = n
                if n == 1:
                    if r == _NO_BUDGET:
                        return self._budget(1)
                    if r == _TOO_BIG:
                        raise _ProbeFailed(RingProbe(nr_req=1, errno=_errno.EINVAL))
                    return self._below_floor()
                step *= 2
        else:
            lo, step = g, 1
            while True:  # gallop up
                n = min(cap, g + step)
                r = f(n)
                if r == L:
                    return self._exact(n, "converged")
                if r < 0 or r > L:
                    hi = n
                    break
                lo = n
                if n >= cap:
                    return self._result(
                        IMPOSSIBLE,
                        reason=f"a ring of {L} bytes is larger than any ring io_setup "
                        f"can create here (io_setup({n}) gives {r} bytes)",
                    )
                step *= 2
        while hi - lo > 1:  # bisect: f(lo) < L, f(hi) > L or refused
            mid = (lo + hi) // 2
            r = f(mid)
            if r == L:
                return self._exact(mid, "converged")
            if 0 < r < L:
                lo = mid
            else:
                hi = mid
        at_hi = f(hi)
        if at_hi == _NO_BUDGET:
            return self._budget(hi)
        if at_hi == _TOO_BIG:
            return self._result(
                IMPOSSIBLE,
                reason=f"a ring of {L} bytes needs more than {lo} events, beyond what "
                f"io_setup accepts here (io_setup({hi}) fails with EINVAL)",
            )
        return self._result(
            IMPOSSIBLE,
            reason=f"no nr_req gives a ring of exactly {L} bytes here: io_setup({lo}) "
            f"gives {f(lo)} bytes and io_setup({hi}) gives {at_hi} bytes",
        )

    def _model_needed(self, at_least: int) -> int:
        """The smallest n the model says gives L, if it is at least *at_least*."""
        model = self.s.model
        span = model.nr_req_range(self.L) if model else None
        return span[0] if span and span[0] >= at_least else at_least

    def _below_floor(self) -> Estimate:
        smallest = self._smallest()
        facts = self.s.facts
        model = self.s.model
        floor = ""
        if model is not None and model.arithmetic.floor:
            a = model.arithmetic
            floor = (
                f"; io_setup raises every request to at least {a.floor} events "
                f"({a.floor_per_cpu} per possible CPU)"
            )
        return self._result(
            IMPOSSIBLE,
            reason=f"the ring of {self.L} bytes ({self._pages(self.L)}) is smaller than "
            f"the smallest ring this host can create, {smallest} bytes "
            f"({self._pages(smallest)}) with {facts.possible_cpus} possible CPUs{floor}; "
            "no nr_req can reproduce it here: restore on a host with fewer possible CPUs",
        )

    def _budget(self, needed: int) -> Estimate:
        facts = self.s.kernel.facts()
        return self._result(
            BUDGET,
            needed=needed,
            reason=f"a ring of {self.L} bytes needs io_setup({needed}) or more, but "
            f"fs.aio-max-nr={facts.aio_max_nr} with fs.aio-nr={facts.aio_nr} in use "
            f"leaves {facts.aio_headroom}: wait for AIO users to finish or raise it "
            f"(sysctl -w fs.aio-max-nr={facts.aio_nr + needed})",
        )


def estimate(
    kernel: Kernel,
    ring_len: int,
    stored_nr_req: int | None = None,
    model: RingModel | None = None,
    knowledge: Knowledge | None = None,
) -> Estimate:
    """The nr_req that reproduces a ring of *ring_len* bytes on *kernel*.

    *model* (or *knowledge*, which also carries observations from this boot)
    only shapes the first guess; every EXACT answer rests on what the kernel
    answered. Without either, the search starts from *stored_nr_req* or CRIU's
    formula.
    """
    know = knowledge if knowledge is not None else Knowledge()
    if model is not None:
        know.model = model
    return estimate_many(kernel, [RingRequest(ring_len, stored_nr_req)], know)[0]


def estimate_many(
    kernel: Kernel,
    requests: Sequence[RingRequest],
    knowledge: Knowledge | None = None,
    calibrate: bool = False,
) -> list[Estimate]:
    """Estimates for many rings; one batched io_setup per distinct first guess.

    Requests with the same ring length and stored value share one estimate (its
    ``probes`` is counted once, on the first of them). With *calibrate* and no
    model yet, the first guesses come from the modern kernel's arithmetic for
    this host's facts and the calibration probes ride in the same batch, so a
    cold start costs one round trip; the model is then fitted to what the kernel
    answered.
    """
    know = knowledge if knowledge is not None else Knowledge()
    session = _Session(kernel, know)
    extra: list[int] = []
    if calibrate and know.model is None:
        know.model = prior_model(session.facts)
        extra = list(calibration_points(session.facts))
    distinct = list(dict.fromkeys(requests))
    plans: dict[RingRequest, tuple[int, str] | Estimate] = {}
    for req in distinct:
        plans[req] = _Estimation(
            session, req.ring_len, req.stored_nr_req, req.smallest
        ).first_guess()
    guesses = [p[0] for p in plans.values() if isinstance(p, tuple)]
    probed = session.prefetch(guesses + extra)
    if extra:
        know.calibration_probes += sum(1 for n in extra if n in probed)
        know.model = fit_model(session.facts, know.observed)
        # Those guesses came from the prior (a modern kernel). Plan again with
        # the fitted model, as a warm run does, so that a cold run decides
        # alike: a stored nr_req this kernel honours stays (fine), a rewritten
        # ring gets the model's least n. With a right prior nothing changes.
        for req in distinct:
            plans[req] = _Estimation(
                session, req.ring_len, req.stored_nr_req, req.smallest
            ).first_guess()
        probed |= session.prefetch([p[0] for p in plans.values() if isinstance(p, tuple)])
    # Probes of the shared batch are charged to the first estimate that used them.
    charged: set[int] = set()
    done: dict[RingRequest, Estimate] = {}
    for req, plan in plans.items():
        if isinstance(plan, Estimate):
            done[req] = plan
            continue
        guess, source = plan
        job = _Estimation(session, req.ring_len, req.stored_nr_req, req.smallest)
        result = job.run(guess, source)
        batch_probe = 1 if guess in probed and guess not in charged else 0
        charged.add(guess)
        done[req] = _with_probes(result, result.probes + batch_probe)
    out: list[Estimate] = []
    seen: set[RingRequest] = set()
    for req in requests:
        est = done[req]
        out.append(est if req not in seen else _with_probes(est, 0))
        seen.add(req)
    return out


def _with_probes(est: Estimate, probes: int) -> Estimate:
    return est.replace(probes=probes)
