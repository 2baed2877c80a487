"""``--kernel SPEC`` / the ``kernel`` setting: which kernel criu-aio asks.

The default is the ``kernel`` setting (``$CRIU_AIO_KERNEL``, the config file;
``criu_aio_plugin.config``), else ``live``.

Grammar::

    live                          the running kernel (default)
    sim:[PRESET][,KEY=VALUE]...   a simulated kernel; a preset first, then overrides
    agent:CMD                     a probe agent run as CMD (another kernel, e.g. a VM);
                                  agent: alone runs the local criu-aio-probe

Simulated keys: ``cpus`` (possible CPUs), ``doubling`` (0/1), ``floor_per_cpu``
(default 4; 0 disables the floor), ``page`` (bytes), ``header``, ``event``,
``extra_slots``, ``aio_max_nr``, ``aio_nr``. Presets: see
``criu_aio_plugin.kernel.simulated.PRESETS`` (``v3.10``, ``x86-64``, ...).
Without a preset a simulated kernel starts as a modern kernel with 1 possible CPU
and 4 KiB pages.

Specs come from peers' environments and config files, so numbers are read
with bounds: at most ``_MAX_NUMBER_CHARS`` characters (decimal, or 0x/0o/0b;
``int()`` alone would read a 30,000-digit hexadecimal number, whose ring
arithmetic then never ends) and a range per key (``_LIMITS``).
"""

from __future__ import annotations

from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.kernel.arithmetic import RingArithmetic
from criu_aio_plugin.kernel.interface import Kernel

_ARITH_KEYS = {
    "cpus": "possible_cpus",
    "doubling": "doubling",
    "floor_per_cpu": "floor_per_cpu",
    "page": "page_size",
    "header": "header",
    "event": "event",
    "extra_slots": "extra_slots",
}
_BUDGET_KEYS = ("aio_max_nr", "aio_nr")
_MAX_NUMBER_CHARS = 24
# Largest value each key may take: far beyond any real kernel (Linux's NR_CPUS
# is at most 8192, pages at most 1 GiB), small enough that the arithmetic on
# them stays instant.
_LIMITS = {
    "cpus": 1 << 20,
    "doubling": 1,
    "floor_per_cpu": 1 << 16,
    "page": 1 << 30,
    "header": 1 << 20,
    "event": 1 << 20,
    "extra_slots": 1 << 20,
    "aio_max_nr": (1 << 63) - 1,
    "aio_nr": (1 << 63) - 1,
}


def _shown(text: str, limit: int = 40) -> str:
    """*text* for a message: repr, cut to *limit* characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _number(key: str, value: str) -> int:
    text = value.strip()
    if not text or len(text) > _MAX_NUMBER_CHARS:
        raise ClientError(
            f"kernel spec {key}={_shown(text)}: not a number of at most "
            f"{_MAX_NUMBER_CHARS} characters"
        )
    try:
        number = int(text, 0)
    except ValueError as err:
        raise ClientError(f"kernel spec {key}={_shown(text)}: not a number") from err
    if number < 0:
        raise ClientError(f"kernel spec {key}={number}: must not be negative")
    if number > _LIMITS.get(key, 0):
        raise ClientError(f"kernel spec {key}={number}: larger than {_LIMITS.get(key, 0)}")
    return number


def kernel_from_spec(spec: str | None = None) -> Kernel:
    """The kernel *spec* names (default: the ``kernel`` setting, else ``live``)."""
    if spec is None:
        from criu_aio_plugin import config

        spec = config.current().kernel
    text = spec.strip() or "live"
    kind, _, rest = text.partition(":")
    if kind == "live" and not rest:
        from criu_aio_plugin.kernel.live import LiveKernel

        return LiveKernel()
    if kind == "sim":
        return simulated_from_spec(rest)
    if kind == "agent":
        # An empty command means the local criu-aio-probe (find_agent()).
        import importlib

        try:
            module = importlib.import_module("criu_aio_plugin.kernel.agent")
        except ImportError as err:
            raise ClientError("this criu-aio has no agent kernel support") from err
        kernel: Kernel = module.AgentKernel(rest)
        return kernel
    raise ClientError(
        f"unknown kernel spec {_shown(text)}",
        hint="use live, sim:KEY=VALUE,... (keys cpus, doubling, floor_per_cpu, page), "
        "sim:v3.10 or agent:CMD",
    )


def simulated_from_spec(body: str) -> Kernel:
    """The simulated kernel for the part of a spec after ``sim:``."""
    from criu_aio_plugin.kernel.simulated import PRESETS, SimulatedKernel

    items = [p.strip() for p in body.split(",") if p.strip()]
    kernel = SimulatedKernel(arithmetic=RingArithmetic())
    if items and "=" not in items[0]:
        preset = items.pop(0)
        if preset not in PRESETS:
            raise ClientError(
                f"unknown simulated kernel preset {_shown(preset)}",
                hint=f"presets: {', '.join(sorted(PRESETS))}",
            )
        kernel = PRESETS[preset]()
    arith_changes: dict[str, int | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ClientError(f"kernel spec item {_shown(item)} is not KEY=VALUE")
        if key not in _LIMITS:
            known = ", ".join([*_ARITH_KEYS, *_BUDGET_KEYS])
            raise ClientError(f"unknown kernel spec key {_shown(key)}", hint=f"keys: {known}")
        number = _number(key, value)
        if key in _ARITH_KEYS:
            if key == "doubling" and number not in (0, 1):
                raise ClientError(f"kernel spec doubling={number}: use 0 or 1")
            if key in ("cpus", "page", "event") and number == 0:
                raise ClientError(f"kernel spec {key}=0: must be positive")
            arith_changes[_ARITH_KEYS[key]] = bool(number) if key == "doubling" else number
        elif key == "aio_max_nr":
            kernel.aio_max_nr = number
        else:
            kernel.base_aio_nr = number
    page = int(arith_changes.get("page_size", kernel.arithmetic.page_size))
    if page & (page - 1):
        raise ClientError(f"kernel spec page={page}: not a power of two")
    if arith_changes:
        kernel.arithmetic = kernel.arithmetic.replace(**arith_changes)
        kernel.label = ""  # the name is the spec again
    return kernel
