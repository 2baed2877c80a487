"""Facts about the running kernel that bear on AIO rings, computed once and named.

The per-CPU floor of io_setup uses num_possible_cpus() (fs/aio.c,
ioctx_alloc), which is the count in /sys/devices/system/cpu/possible, not the
online CPUs and not os.cpu_count(). fs.aio-max-nr / fs.aio-nr are the system-wide
budget (Documentation/admin-guide/sysctl/fs.rst); aio-nr changes all the time, so
it is the one fact read fresh on every call.
"""

from __future__ import annotations

import os

from criu_aio_plugin.errors import KernelError
from criu_aio_plugin.kernel.interface import HostFacts

POSSIBLE_CPUS_PATH = "/sys/devices/system/cpu/possible"
AIO_MAX_NR_PATH = "/proc/sys/fs/aio-max-nr"
AIO_NR_PATH = "/proc/sys/fs/aio-nr"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def parse_cpu_list(text: str) -> int:
    """Count the CPUs in a kernel cpu list such as ``0-3,8-11`` or ``0``."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            count += int(hi) - int(lo) + 1 if sep else 1
        except ValueError as err:
            raise KernelError(f"cannot parse CPU list {text.strip()!r}") from err
    if count <= 0:
        raise KernelError(f"empty CPU list {text.strip()!r}")
    return count


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError as err:
        raise KernelError(f"cannot read {path}: {err.strerror}", errno=err.errno) from err


def _read_int(path: str) -> int:
    text = _read(path)
    try:
        return int(text)
    except ValueError as err:
        raise KernelError(f"{path} holds {text!r}, not a number") from err


def read_aio_nr() -> int:
    """fs.aio-nr now: the requested events of every live context on the system."""
    return _read_int(AIO_NR_PATH)


def read_aio_max_nr() -> int:
    """fs.aio-max-nr now (an administrator may change it at any time)."""
    return _read_int(AIO_MAX_NR_PATH)


# Facts that cannot change while we run, read once (by hand: functools is
# not lean).
_once: dict[str, int | str] = {}


def possible_cpus() -> int:
    """num_possible_cpus(): what the per-CPU floor of io_setup multiplies."""
    if "cpus" not in _once:
        _once["cpus"] = parse_cpu_list(_read(POSSIBLE_CPUS_PATH))
    return int(_once["cpus"])


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def boot_id() -> str:
    """Changes on every boot: keys the per-boot model cache."""
    if "boot_id" not in _once:
        _once["boot_id"] = _read(BOOT_ID_PATH)
    return str(_once["boot_id"])


def kernel_release() -> str:
    return os.uname().release  # what platform.release() says, without importing platform


def machine() -> str:
    return os.uname().machine


def host_facts() -> HostFacts:
    """This host's facts; everything but the aio counters is cached for the process."""
    return HostFacts(
        kernel_release=kernel_release(),
        boot_id=boot_id(),
        page_size=page_size(),
        possible_cpus=possible_cpus(),
        aio_max_nr=read_aio_max_nr(),
        aio_nr=read_aio_nr(),
        machine=machine(),
    )
