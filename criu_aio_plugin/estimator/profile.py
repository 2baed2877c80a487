"""The host profile: one versioned JSON document with a host's ring-sizing facts.

``criu-aio profile --json`` prints it; fleet placement reads it; and
``kernel_from_profile(doc)`` rebuilds a kernel that sizes rings exactly
like the profiled host, so a scheduler can ask "can this host restore that
checkpoint?" without the host. Schema (version 1)::

    {
      "schema": "criu-aio/host-profile", "version": 1,
      "kernel": "live" | "sim:..." ,          # what was asked
      "host": {"hostname", "kernel_release", "boot_id", "machine",
               "page_size", "possible_cpus"},
      "ring_sizing": {"page_size", "doubling", "possible_cpus", "floor_per_cpu",
                      "floor_events", "header", "event", "extra_slots",
                      "calibrated"},          # false: no model fitted the probes
      "smallest_ring": {"len", "pages", "nr"},  # io_setup(1), as observed
      "aio": {"max_nr", "nr", "headroom"},
      "criu_formula": {"first_right_pages"}   # smallest P whose CRIU nr_req is right
    }

Readers must ignore keys they do not know; a new version number means an
incompatible change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.estimator.model import Knowledge, RingModel, calibrate
from criu_aio_plugin.kernel.arithmetic import (
    AIO_RING_HEADER,
    IO_EVENT_SIZE,
    RingArithmetic,
    criu_formula,
)
from criu_aio_plugin.kernel.interface import Kernel
from criu_aio_plugin.kernel.simulated import DEFAULT_AIO_MAX_NR, SimulatedKernel

SCHEMA = "criu-aio/host-profile"
VERSION = 1
_CHECK_PAGES = 4096


def _first_right_pages(model: RingModel) -> int | None:
    """The smallest ring (pages) from which CRIU's formula is right, per the model."""
    page = model.arithmetic.page_size
    for pages in range(1, _CHECK_PAGES + 1):
        length = pages * page
        if (
            length >= model.smallest_ring_len
            and model.ring_len(max(1, criu_formula(length))) == length
        ):
            return pages
    return None


def profile_document(kernel: Kernel, knowledge: Knowledge | None = None) -> dict[str, Any]:
    """The host profile of *kernel* (calibrates it when *knowledge* has no model)."""
    import socket

    know = knowledge if knowledge is not None else Knowledge()
    if know.model is None or 1 not in know.observed:
        know = calibrate(kernel, know)
    facts = kernel.facts()
    model = know.model
    smallest = know.observed.get(1, 0)
    a = (
        model.arithmetic
        if model
        else RingArithmetic(page_size=facts.page_size, possible_cpus=facts.possible_cpus)
    )
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "kernel": kernel.name,
        "host": {
            "hostname": socket.gethostname() if kernel.is_live else _remote_name(kernel),
            "kernel_release": facts.kernel_release,
            "boot_id": facts.boot_id,
            "machine": facts.machine,
            "page_size": facts.page_size,
            "possible_cpus": facts.possible_cpus,
        },
        "ring_sizing": {
            "page_size": a.page_size,
            "doubling": a.doubling,
            "possible_cpus": a.possible_cpus,
            "floor_per_cpu": a.floor_per_cpu,
            "floor_events": a.floor,
            "header": a.header,
            "event": a.event,
            "extra_slots": a.extra_slots,
            "calibrated": model is not None,
        },
        "smallest_ring": {
            "len": smallest,
            "pages": smallest // facts.page_size if facts.page_size else 0,
            "nr": (smallest - AIO_RING_HEADER) // IO_EVENT_SIZE if smallest else 0,
        },
        "aio": {
            "max_nr": facts.aio_max_nr,
            "nr": facts.aio_nr,
            "headroom": facts.aio_headroom,
        },
        "criu_formula": {"first_right_pages": _first_right_pages(model) if model else None},
    }


def arithmetic_from_profile(doc: Mapping[str, Any]) -> RingArithmetic:
    """The ring arithmetic a host profile describes (ClientError if it is not one)."""
    if doc.get("schema") != SCHEMA:
        raise ClientError(f"not a criu-aio host profile (schema {doc.get('schema')!r})")
    if doc.get("version") != VERSION:
        raise ClientError(
            f"host profile version {doc.get('version')!r} is not supported (want {VERSION})",
            hint="regenerate it with this criu-aio's `criu-aio profile --json`",
        )
    rs = doc.get("ring_sizing")
    if not isinstance(rs, Mapping):
        raise ClientError("host profile has no ring_sizing section")
    try:
        arith = RingArithmetic(
            page_size=int(rs["page_size"]),
            doubling=bool(rs["doubling"]),
            possible_cpus=int(rs["possible_cpus"]),
            floor_per_cpu=int(rs["floor_per_cpu"]),
            header=int(rs.get("header", AIO_RING_HEADER)),
            event=int(rs.get("event", IO_EVENT_SIZE)),
            extra_slots=int(rs.get("extra_slots", 2)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ClientError(f"host profile ring_sizing is malformed: {err!r}") from err
    if arith.page_size <= 0 or arith.possible_cpus <= 0 or arith.event <= 0:
        raise ClientError("host profile ring_sizing has non-positive sizes")
    smallest = doc.get("smallest_ring", {}).get("len")
    if smallest and int(smallest) != arith.smallest_ring_len:
        raise ClientError(
            f"host profile is inconsistent: smallest ring {smallest} bytes observed, "
            f"but its ring_sizing gives {arith.smallest_ring_len}"
        )
    return arith


def _remote_name(kernel: Kernel) -> str:
    """The host an agent kernel reports, else the kernel's own description."""
    name = getattr(kernel, "hostname", None)
    return name if isinstance(name, str) and name else kernel.name


def kernel_from_profile(doc: Mapping[str, Any]) -> SimulatedKernel:
    """Rebuild the kernel a host profile describes: a simulated kernel sizing rings as it."""
    arith = arithmetic_from_profile(doc)
    aio = doc.get("aio", {})
    host = doc.get("host", {})
    try:
        return SimulatedKernel(
            arithmetic=arith,
            aio_max_nr=int(aio.get("max_nr", DEFAULT_AIO_MAX_NR)),
            base_aio_nr=int(aio.get("nr", 0)),
            release=str(host.get("kernel_release", "simulated")),
            machine=str(host.get("machine", "x86_64")),
            label=f"profile:{host.get('hostname', host.get('kernel_release', '?'))}",
        )
    except (TypeError, ValueError) as err:
        raise ClientError(f"host profile has a malformed aio section: {err}") from err
