"""Kubernetes placement: node labels for Node Feature Discovery, and nodeAffinity.

How it works. A node can restore a checkpoint's AIO rings when, for every ring
of ``L`` bytes, some io_setup(n) on that node maps a ring of exactly ``L``
bytes (CRIU's restorer compares the header ``nr``, which is a function of the
mapping length; criu/pie/restorer.c). A node maps rings of ``p * S`` bytes for
every page count ``p`` from its smallest ring upwards (``S`` its page size):
fs/aio.c grows a ring by 2 slots (64 bytes) per requested event, or 1 slot
without the doubling, so no page count above the smallest is skipped. Hence the
node can restore the checkpoint iff

    S divides every L  and  smallest_ring_pages(node) <= min(L) / S

plus the AIO budget: fs.aio-max-nr must admit the sum of the nr_req values
(each live context charges its requested n to fs.aio-nr).

The labels (written by ``criu-aio profile --nfd`` into an NFD local feature
file) carry the page size, the smallest ring in pages and fs.aio-max-nr; the
affinity has nodeSelectorTerms (ORed) per page size S that divides every ring,
each requiring ``page-size`` = S, ``aio-min-ring-pages`` <= min(L)/S and
``aio-max-nr`` >= B. Gt/Lt are strict and take one integer string
(k8s.io/component-helpers nodeaffinity), hence the +1/-1.

B is the smallest summed n that builds the rings with the doubling (the most
economical arithmetic known); it depends on whether the node's smallest ring
is exactly the checkpoint's smallest ring (then io_setup(1) builds those),
hence two terms per page size. It is a lower bound of what a restore charges:
on v3.10 kernels more events are needed, and the estimator keeps a stored
nr_req that reproduces its ring even where a smaller one would do. So the
budget expression never turns away a node that can restore; with the default
fs.aio-max-nr (65536) and everyday rings it never binds, and the affinity is
exact (tests/sim/test_fleet.py). The node's *current* fs.aio-nr is not a label
(it changes by the second); criu-aio checks it at restore time.

The labels exist only on nodes where criu-aio wrote them, so the affinity
admits nodes where a restore through criu-aio works; the ``criu-formula-ok``
label is informative (CRIU alone would also do there, for rings at or above the
smallest).

Linux page sizes are powers of two from 4 KiB (x86, most arm64) to 256 KiB
(some powerpc 44x and hexagon configurations); terms are generated for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import gcd
from typing import Any

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.kernel.arithmetic import (
    AIO_RING_HEADER,
    IO_EVENT_SIZE,
    RingArithmetic,
    criu_formula,
)

LABEL_PREFIX = "criu-aio.io/"
LABEL_MIN_RING_PAGES = LABEL_PREFIX + "aio-min-ring-pages"
LABEL_PAGE_SIZE = LABEL_PREFIX + "page-size"
LABEL_FORMULA_OK = LABEL_PREFIX + "criu-formula-ok"
LABEL_POSSIBLE_CPUS = LABEL_PREFIX + "possible-cpus"
LABEL_AIO_MAX_NR = LABEL_PREFIX + "aio-max-nr"
LABEL_PROFILE_VERSION = LABEL_PREFIX + "profile-version"

MIN_PAGE_SIZE = 4096
MAX_PAGE_SIZE = 256 * 1024

# `criu-aio check` tests CRIU's formula up to at least this many requested
# events (issue 3); the formula-ok label covers the same range.
FORMULA_CHECK_EVENTS = 8192

_NFD_FEATURES_DIR = "/etc/kubernetes/node-feature-discovery/features.d"
NFD_FEATURE_FILE = _NFD_FEATURES_DIR + "/criu-aio"


@dataclass(frozen=True)
class NodeFacts:
    """What placement needs to know about one node (the content of its labels)."""

    page_size: int
    min_ring_pages: int
    possible_cpus: int
    aio_max_nr: int
    criu_formula_ok: bool

    @property
    def min_ring_len(self) -> int:
        return self.min_ring_pages * self.page_size


def formula_ok(arith: RingArithmetic, max_events: int = FORMULA_CHECK_EVENTS) -> bool:
    """Whether CRIU's dump formula reproduces every ring this kernel can create.

    Every ring size from the smallest up to the one holding ``max_events``
    requested events is tried; sizes below the smallest ring are not the
    formula's fault (no nr_req reproduces them) and are left out.
    """
    page = arith.page_size
    for pages in range(arith.ring_pages(1), arith.ring_pages(max_events) + 1):
        ring_len = pages * page
        if arith.ring_len(criu_formula(ring_len)) != ring_len:
            return False
    return True


def node_facts_from_arithmetic(
    arith: RingArithmetic, *, aio_max_nr: int, max_events: int = FORMULA_CHECK_EVENTS
) -> NodeFacts:
    """The facts of a node whose kernel sizes rings by ``arith``."""
    return NodeFacts(
        page_size=arith.page_size,
        min_ring_pages=arith.ring_pages(1),
        possible_cpus=arith.possible_cpus,
        aio_max_nr=aio_max_nr,
        criu_formula_ok=formula_ok(arith, max_events),
    )


def node_facts_from_profile(doc: Mapping[str, Any]) -> NodeFacts:
    """The facts of the host a profile document describes (``criu-aio profile --json``).

    The labels come from the profile's ring-sizing model, the same model
    ``criu-aio can-restore`` judges checkpoints with, so labels and placement agree.
    """
    from criu_aio_plugin.estimator.profile import arithmetic_from_profile

    try:
        aio_max_nr = int(doc["aio"]["max_nr"])
    except (KeyError, TypeError, ValueError) as err:
        raise ClientError(f"host profile has no usable aio.max_nr: {err!r}") from err
    return node_facts_from_arithmetic(arithmetic_from_profile(doc), aio_max_nr=aio_max_nr)


def nfd_labels(facts: NodeFacts, *, profile_version: int = 1) -> dict[str, str]:
    """The node labels for ``facts``, as NFD would apply them."""
    return {
        LABEL_MIN_RING_PAGES: str(facts.min_ring_pages),
        LABEL_PAGE_SIZE: str(facts.page_size),
        LABEL_FORMULA_OK: "true" if facts.criu_formula_ok else "false",
        LABEL_POSSIBLE_CPUS: str(facts.possible_cpus),
        LABEL_AIO_MAX_NR: str(facts.aio_max_nr),
        LABEL_PROFILE_VERSION: str(profile_version),
    }


def nfd_feature_file(labels: Mapping[str, str], *, source: str = "") -> str:
    """The text of an NFD local feature file (``key=value`` lines) for ``labels``.

    NFD reads every file in /etc/kubernetes/node-feature-discovery/features.d/
    and ignores dot files, so write it as ``.criu-aio`` and rename it.
    """
    lines = ["# criu-aio host profile labels (`criu-aio profile --nfd`)"]
    if source:
        lines.append(f"# {source}")
    lines += [f"{key}={value}" for key, value in sorted(labels.items())]
    return "\n".join(lines) + "\n"


def parse_nfd_labels(labels: Mapping[str, str]) -> NodeFacts:
    """The facts back from a node's labels; ClientError naming a missing/bad label."""

    def number(key: str) -> int:
        try:
            raw = labels[key]
        except KeyError:
            raise ClientError(f"node label {key} is missing", hint=_LABEL_HINT) from None
        try:
            return int(raw)
        except ValueError as err:
            raise ClientError(f"node label {key}={raw!r} is not an integer") from err

    ok = labels.get(LABEL_FORMULA_OK)
    if ok not in ("true", "false"):
        raise ClientError(f"node label {LABEL_FORMULA_OK} is {ok!r}, not true/false")
    return NodeFacts(
        page_size=number(LABEL_PAGE_SIZE),
        min_ring_pages=number(LABEL_MIN_RING_PAGES),
        possible_cpus=number(LABEL_POSSIBLE_CPUS),
        aio_max_nr=number(LABEL_AIO_MAX_NR),
        criu_formula_ok=ok == "true",
    )


_LABEL_HINT = "run `criu-aio profile --nfd` on the node and let NFD pick the file up"


def min_nr_req_doubling(pages: int, page_size: int) -> int:
    """The smallest io_setup n giving a ``pages``-page ring with the doubling, no floor.

    Ring bytes are HEADER + EVENT * (2n + 2); the ring has ``pages`` pages when
    (pages - 1) * S < HEADER + EVENT * (2n + 2) <= pages * S.
    """
    fixed = AIO_RING_HEADER + 2 * IO_EVENT_SIZE
    step = 2 * IO_EVENT_SIZE
    below = (pages - 1) * page_size - fixed  # bytes that must be exceeded
    if below < 0:
        return 1
    return max(1, below // step + 1)


def budget_lower_bound(ring_lens: Sequence[int], page_size: int, *, floor_lifts: bool) -> int:
    """A lower bound of the summed nr_req a node of ``page_size`` needs (module doc).

    ``floor_lifts``: the node's smallest ring is exactly the checkpoint's
    smallest ring, so io_setup(1) builds those rings.
    """
    if not ring_lens:
        return 0
    smallest = min(ring_lens)
    total = 0
    for ring_len in ring_lens:
        if floor_lifts and ring_len == smallest:
            total += 1
        else:
            total += min_nr_req_doubling(ring_len // page_size, page_size)
    return total


def candidate_page_sizes(ring_lens: Iterable[int]) -> list[int]:
    """Page sizes (powers of two, 4 KiB..256 KiB) that divide every ring length."""
    common = 0
    for ring_len in ring_lens:
        if ring_len <= 0:
            raise ClientError(f"ring length {ring_len} is not positive")
        common = gcd(common, ring_len)
    sizes = []
    size = MIN_PAGE_SIZE
    while size <= MAX_PAGE_SIZE and common % size == 0:
        sizes.append(size)
        size *= 2
    return sizes


def _requirement(key: str, operator: str, value: int | str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": [str(value)]}


def selector_terms(ring_lens: Sequence[int]) -> list[dict[str, Any]]:
    """nodeSelectorTerms (ORed) admitting exactly the nodes that can hold the rings.

    Per page size S, up to two terms: nodes whose smallest ring is exactly the
    checkpoint's smallest ring (those rings cost io_setup(1) each), and nodes
    whose smallest ring is smaller. An empty list means no node can.
    """
    smallest = min(ring_lens)
    terms = []
    for page in candidate_page_sizes(ring_lens):
        pages = smallest // page
        page_is = {"key": LABEL_PAGE_SIZE, "operator": "In", "values": [str(page)]}
        lifted = budget_lower_bound(ring_lens, page, floor_lifts=True)
        exact = [
            page_is,
            _requirement(LABEL_MIN_RING_PAGES, "Gt", pages - 1),
            _requirement(LABEL_MIN_RING_PAGES, "Lt", pages + 1),
            _requirement(LABEL_AIO_MAX_NR, "Gt", lifted - 1),
        ]
        terms.append({"matchExpressions": exact})
        if pages > 1:  # a smallest ring of fewer pages exists only then
            below = budget_lower_bound(ring_lens, page, floor_lifts=False)
            smaller = [
                page_is,
                _requirement(LABEL_MIN_RING_PAGES, "Lt", pages),
                _requirement(LABEL_AIO_MAX_NR, "Gt", below - 1),
            ]
            terms.append({"matchExpressions": smaller})
    return terms


def node_affinity(ring_lens: Sequence[int]) -> dict[str, Any]:
    """A Kubernetes ``nodeAffinity`` (API field names) for a checkpoint's rings.

    No rings: ``{}`` (no constraint; every node can restore). Rings no Linux
    page size can hold: ClientError, since an affinity matching nothing would
    leave the Pod pending with no explanation.
    """
    if not ring_lens:
        return {}
    terms = selector_terms(ring_lens)
    if not terms:
        raise ClientError(
            f"no page size from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE} divides every ring "
            f"length ({sorted(set(ring_lens))}); no node can restore these rings",
            hint="the images may be damaged: check them with `criu-aio inspect`",
        )
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expression["key"]
    operator = expression["operator"]
    values = list(expression.get("values") or [])
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if len(values) != 1:
            raise ClientError(f"{operator} on {key} needs exactly one value, got {values}")
        bound = int(values[0])
        if not present:
            return False
        try:
            value = int(labels[key])
        except ValueError:
            return False
        return value > bound if operator == "Gt" else value < bound
    raise ClientError(f"unknown nodeSelector operator {operator!r}")


def affinity_admits(affinity: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` passes ``affinity``'s required node selector.

    Kubernetes semantics (k8s.io/component-helpers/scheduling/corev1/nodeaffinity):
    terms are ORed, a term's expressions ANDed, an empty term matches nothing,
    Gt/Lt compare integers strictly and fail on a missing or non-integer label.
    """
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        expressions = term.get("matchExpressions") or []
        if expressions and all(_expression_matches(e, labels) for e in expressions):
            return True
    return False
