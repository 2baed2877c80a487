"""The learned model of a kernel's ring sizing, and its per-boot cache.

Calibration asks the kernel two questions: io_setup(1), whose ring is the
smallest ring the host can create (the per-CPU floor decides it), and io_setup
of a value above the expected floor, whose ring tells doubling from no doubling.
The model is the first ``RingArithmetic`` (preferring the modern kernel's) that
predicts both rings. Where the floor is not known exactly it does not matter:
every n at or below it gives the smallest ring, and above it the floor plays no
part.

Knowledge about a live kernel is cached per boot: the model and every
``io_setup(n) -> ring_len`` observed, keyed by /proc/sys/kernel/random/boot_id
and the kernel release, as JSON in /run/criu-aio (root), else
$XDG_RUNTIME_DIR/criu-aio, else a 0700 /tmp/criu-aio-<uid>; $CRIU_AIO_CACHE_DIR
overrides. A cache that is unreadable, corrupt, from another boot, or in a
directory someone else could write, is ignored. The estimator trusts only
observations (what the kernel answered this boot), never the model alone.
"""

from __future__ import annotations

import os
import stat

from criu_aio_plugin import cjson
from criu_aio_plugin.kernel.arithmetic import RingArithmetic
from criu_aio_plugin.kernel.interface import HostFacts, Kernel, probe_batch
from criu_aio_plugin.values import Record, Value

# Lean core (docs/architecture.md): cjson instead of json, tempfile only for
# the last-resort cache folder.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

CACHE_ENV = "CRIU_AIO_CACHE_DIR"
CACHE_FILE = "ring-model.json"
CACHE_SCHEMA = "criu-aio/ring-model-cache"
CACHE_VERSION = 1
_MAX_OBSERVED = 8192  # observations kept in the cache file
_MAX_EVENTS = 0x10000000  # ioctx_alloc's overflow guard, in bytes of io_events
_FLOOR_CANDIDATES = (4, 0, 1, 2, 8, 16, 32)


class RingModel(Value):
    """A kernel's ring sizing as far as calibration could tell (a frozen value)."""

    arithmetic: RingArithmetic

    @property
    def smallest_ring_len(self) -> int:
        return self.arithmetic.smallest_ring_len

    @property
    def max_nr_req(self) -> int:
        """The largest n io_setup accepts before its overflow guard (EINVAL)."""
        a = self.arithmetic
        return (_MAX_EVENTS // a.event) // (2 if a.doubling else 1)

    def ring_len(self, nr_req: int) -> int:
        return self.arithmetic.ring_len(nr_req)

    def nr_req_range(self, ring_len: int) -> tuple[int, int] | None:
        """The n values the model says give exactly *ring_len* bytes, or None."""
        lo = self.first_at_least(ring_len)
        if lo is None or self.ring_len(lo) != ring_len:
            return None
        hi = self.first_at_least(ring_len + 1)
        return lo, (self.max_nr_req if hi is None else hi - 1)

    def first_at_least(self, ring_len: int) -> int | None:
        # ring_len(n) is monotonic in n: bisect on the pure arithmetic.
        lo, hi = 1, self.max_nr_req
        if self.ring_len(hi) < ring_len:
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ring_len(mid) >= ring_len:
                hi = mid
            else:
                lo = mid + 1
        return lo


class Knowledge(Record):
    """What is known about one kernel: a model (maybe) and observed rings.

    ``observed`` maps nr_req -> ring_len for io_setup calls made on this kernel
    (this boot, for a live kernel). ``dirty`` says the cache needs writing.
    Mutable; compares by fields (``Record``).
    """

    model: RingModel | None
    observed: dict[int, int]
    calibration_probes: int
    from_cache: bool
    dirty: bool

    def __init__(
        self,
        model: RingModel | None = None,
        observed: dict[int, int] | None = None,
        calibration_probes: int = 0,
        from_cache: bool = False,
        dirty: bool = False,
    ) -> None:
        self.model = model
        self.observed = {} if observed is None else observed
        self.calibration_probes = calibration_probes
        self.from_cache = from_cache
        self.dirty = dirty

    def observe(self, nr_req: int, ring_len: int) -> None:
        if self.observed.get(nr_req) != ring_len:
            self.observed[nr_req] = ring_len
            self.dirty = True


def calibration_points(facts: HostFacts) -> tuple[int, int]:
    """The two n calibration probes: 1, and one above the modern floor.

    The second is large enough that a doubled and an undoubled ring differ by
    more than a page, whatever the page size.
    """
    floor = 4 * max(1, facts.possible_cpus)
    return 1, 2 * floor + 2 * (facts.page_size // 32) + 100


def prior_model(facts: HostFacts) -> RingModel:
    """What a modern kernel would do on this host: the guess before any probe."""
    return RingModel(RingArithmetic(page_size=facts.page_size, possible_cpus=facts.possible_cpus))


def fit_model(facts: HostFacts, observed: Mapping[int, int]) -> RingModel | None:
    """The first candidate arithmetic that predicts every observation, or None."""
    for doubling in (True, False):
        for per_cpu in _FLOOR_CANDIDATES:
            arith = RingArithmetic(
                page_size=facts.page_size,
                doubling=doubling,
                possible_cpus=facts.possible_cpus,
                floor_per_cpu=per_cpu,
            )
            if all(arith.ring_len(n) == length for n, length in observed.items()):
                return RingModel(arith)
    return None


def calibrate(kernel: Kernel, knowledge: Knowledge | None = None) -> Knowledge:
    """Learn *kernel*'s model with (at most) two probes; keeps earlier observations."""
    known = knowledge or Knowledge()
    facts = kernel.facts()
    wanted = [n for n in calibration_points(facts) if n not in known.observed]
    for result in probe_batch(kernel, wanted):
        known.calibration_probes += 1
        if result.ok:
            known.observe(result.nr_req, result.ring_len)
    known.model = fit_model(facts, known.observed)
    return known


# -- the per-boot cache -----------------------------------------------------


def _safe_dir(path: str) -> bool:
    """A directory only we can write (not a symlink, owned by us, no g/o write)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _ensure_dir(path: str) -> bool:
    try:  # noqa: SIM105 - contextlib.suppress: contextlib stays off the restore path
        os.mkdir(path, 0o700)
    except OSError:  # FileExistsError included; _safe_dir decides
        pass
    return _safe_dir(path)


def default_cache_dir() -> str | None:
    """Where the cache lives on this host (None: nowhere safe and writable)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return explicit if _ensure_dir(explicit) else None
    for path in _cache_dir_candidates():
        if _ensure_dir(path) and os.access(path, os.W_OK):
            return path
    return None


def _cache_dir_candidates() -> Iterator[str]:
    if os.geteuid() == 0:
        yield "/run/criu-aio"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _safe_dir(runtime):
        yield os.path.join(runtime, "criu-aio")
    import tempfile

    yield os.path.join(tempfile.gettempdir(), f"criu-aio-{os.geteuid()}")


class ModelStore:
    """Loads and saves ``Knowledge`` of the live kernel, keyed by boot and release.

    ``directory=None`` picks ``default_cache_dir()``; ``persistent=False`` keeps
    nothing on disk (simulated and agent kernels never touch the disk).
    """

    def __init__(self, directory: str | None = None, persistent: bool = True) -> None:
        self._directory = directory
        self._persistent = persistent

    def _path(self) -> str | None:
        if not self._persistent:
            return None
        directory = self._directory or default_cache_dir()
        if directory is None or not _safe_dir(directory):
            return None
        return os.path.join(directory, CACHE_FILE)

    def has_cache(self, kernel: Kernel) -> bool:
        """Whether a cache file exists for *kernel* (a hint: without one, probes are certain)."""
        path = self._path() if kernel.is_live else None
        return path is not None and os.path.isfile(path)

    def load(self, kernel: Kernel) -> Knowledge:
        """The cached knowledge of *kernel* (empty when none applies)."""
        path = self._path() if kernel.is_live else None
        if path is None:
            return Knowledge()
        try:
            with open(path, encoding="utf-8") as f:
                doc = cjson.loads(f.read())
            return _knowledge_from_doc(doc, kernel.facts())
        except (OSError, ValueError, TypeError, KeyError):
            return Knowledge()  # no cache, or a corrupt one: calibrate again

    def save(self, kernel: Kernel, knowledge: Knowledge) -> bool:
        """Write *knowledge* atomically if it changed; False when it could not be."""
        path = self._path() if kernel.is_live else None
        if path is None or not knowledge.dirty:
            return False
        doc = _doc_from_knowledge(knowledge, kernel.facts())
        # No fsync: the cache is advisory (a torn or lost file is only ignored,
        # and /run is tmpfs); os.replace keeps readers from seeing half a file.
        # The temp is made by hand (O_EXCL, random name) as tempfile.mkstemp
        # would, without importing tempfile (lean core).
        tmp = os.path.join(os.path.dirname(path), f".ring-model.{os.urandom(6).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(cjson.dumps(doc))
            os.replace(tmp, path)
        except OSError:
            try:  # noqa: SIM105 - as in _ensure_dir
                os.unlink(tmp)
            except OSError:
                pass
            return False
        knowledge.dirty = False
        return True


def default_store(kernel: Kernel) -> ModelStore:
    """The per-boot cache for the live kernel; memory only for any other."""
    return ModelStore(persistent=kernel.is_live)


def _doc_from_knowledge(knowledge: Knowledge, facts: HostFacts) -> dict[str, Any]:
    observed = dict(sorted(knowledge.observed.items())[:_MAX_OBSERVED])
    return {
        "schema": CACHE_SCHEMA,
        "version": CACHE_VERSION,
        "boot_id": facts.boot_id,
        "kernel_release": facts.kernel_release,
        "arithmetic": knowledge.model.arithmetic.as_dict() if knowledge.model else None,
        "observed": {str(n): length for n, length in observed.items()},
    }


def _knowledge_from_doc(doc: Any, facts: HostFacts) -> Knowledge:
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != CACHE_SCHEMA
        or doc.get("version") != CACHE_VERSION
        or doc.get("boot_id") != facts.boot_id
        or doc.get("kernel_release") != facts.kernel_release
    ):
        return Knowledge()
    observed = {int(n): int(length) for n, length in dict(doc["observed"]).items()}
    if any(n <= 0 or length <= 0 for n, length in observed.items()):
        return Knowledge()
    arith = doc.get("arithmetic")
    model = None
    if isinstance(arith, dict):
        candidate = RingModel(RingArithmetic(**{k: arith[k] for k in _ARITH_FIELDS}))
        # Never take the file's word over the kernel's: the model must still
        # predict every observation and this host's page size and CPU count.
        a = candidate.arithmetic
        if (
            a.page_size == facts.page_size
            and a.possible_cpus == facts.possible_cpus
            and all(candidate.ring_len(n) == length for n, length in observed.items())
        ):
            model = candidate
    return Knowledge(model=model, observed=observed, from_cache=True)


_ARITH_FIELDS = tuple(RingArithmetic().as_dict())
