"""The one module with ctypes bindings to the kernel's AIO system calls.

glibc has no wrappers for io_setup/io_destroy/io_getevents/io_submit (libaio
does, with its own ABI), so they go through ``syscall(2)``. Every foreign
function has its argtypes/restype declared; failures raise
``OSError(errno, os.strerror(errno), name)``. The libc is injectable
(``AioSyscalls(libc=...)``) so a test can stand a fake in for it without
monkeypatching ctypes.

Syscall numbers come from the kernel's per-architecture tables
(arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h for
the "generic" architectures such as arm64 and riscv).
"""

from __future__ import annotations

import ctypes
import os

from criu_aio_plugin.values import Value

TYPE_CHECKING = False  # typing, platform and ctypes.util (subprocess) cost milliseconds
if TYPE_CHECKING:
    from typing import Any

# name -> (io_setup, io_destroy, io_getevents, io_submit)
_SYSCALL_NUMBERS: dict[str, tuple[int, int, int, int]] = {
    "x86_64": (206, 207, 208, 209),
    "i386": (245, 246, 247, 248),
    "i686": (245, 246, 247, 248),
    # asm-generic: io_setup 0, io_destroy 1, io_submit 2, io_cancel 3, io_getevents 4
    "aarch64": (0, 1, 4, 2),
    "riscv64": (0, 1, 4, 2),
    "loongarch64": (0, 1, 4, 2),
    "ppc64le": (227, 228, 229, 230),
    "ppc64": (227, 228, 229, 230),
    "s390x": (243, 244, 245, 246),
}


class SyscallNumbers(Value):
    io_setup: int
    io_destroy: int
    io_getevents: int
    io_submit: int


def syscall_numbers(machine: str | None = None) -> SyscallNumbers:
    """The AIO syscall numbers for *machine* (default: this one's ``uname -m``)."""
    arch = machine or os.uname().machine
    try:
        return SyscallNumbers(*_SYSCALL_NUMBERS[arch])
    except KeyError as err:
        raise OSError(
            38,  # ENOSYS: we do not know this architecture's numbers
            f"no AIO syscall numbers known for architecture {arch!r}",
            "syscall_numbers",
        ) from err


class _IoEvent(ctypes.Structure):
    # struct io_event (include/uapi/linux/aio_abi.h): data, obj, res, res2
    _fields_ = (
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    )


def _load_libc() -> Any:
    # "libc.so.6" first: ctypes.util.find_library runs ldconfig in a subprocess
    # (milliseconds), which the probe worker's start-up cannot afford.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


class AioSyscalls:
    """io_setup & co. through ``syscall(2)`` of an injectable libc.

    The libc must have been loaded with ``use_errno=True`` (errno is read with
    ``ctypes.get_errno``) unless it is a fake exposing ``syscall`` and
    ``get_errno``.
    """

    _ARGS = 5  # the widest call we make (io_getevents) takes five arguments

    def __init__(self, libc: Any | None = None, machine: str | None = None) -> None:
        self._libc = _load_libc() if libc is None else libc
        self.numbers = syscall_numbers(machine)
        fn = self._libc.syscall
        # syscall(long number, ...) -> long. It is variadic; every argument we
        # pass is a machine word, so a fixed word-sized signature is exact.
        if hasattr(fn, "argtypes"):
            fn.argtypes = [ctypes.c_long] * (1 + self._ARGS)
            fn.restype = ctypes.c_long
        self._syscall = fn
        self._get_errno = getattr(self._libc, "get_errno", ctypes.get_errno)

    def _call(self, name: str, number: int, *args: int) -> int:
        padded = [*args, *([0] * (self._ARGS - len(args)))]
        ret = int(self._syscall(number, *padded))
        if ret < 0:
            err = int(self._get_errno())
            raise OSError(err, os.strerror(err), name)
        return ret

    def io_setup(self, nr_events: int) -> int:
        """Create a context for *nr_events*; returns its aio_context_t (the ring address)."""
        ctx = ctypes.c_ulong(0)
        self._call("io_setup", self.numbers.io_setup, nr_events, ctypes.addressof(ctx))
        return int(ctx.value)

    def io_destroy(self, ctx: int) -> None:
        """Destroy a context (blocks for an RCU grace period, ~32 ms measured here)."""
        self._call("io_destroy", self.numbers.io_destroy, ctx)

    def io_getevents(self, ctx: int, min_nr: int, nr: int) -> list[tuple[int, int, int, int]]:
        """Reap up to *nr* completed events without waiting (zero timeout)."""
        events = (_IoEvent * max(nr, 1))()
        timeout = (ctypes.c_long * 2)(0, 0)
        got = self._call(
            "io_getevents",
            self.numbers.io_getevents,
            ctx,
            min_nr,
            nr,
            ctypes.addressof(events),
            ctypes.addressof(timeout),
        )
        return [(e.data, e.obj, e.res, e.res2) for e in events[:got]]


def read_ring_header(ctx: int) -> tuple[int, int, int]:
    """(id, nr, magic) of the ring mapped at *ctx* in this process.

    struct aio_ring (fs/aio.c): id, nr, head, tail, magic, compat_features,
    incompat_features, header_length, each 4 bytes. The caller must own a live
    context at *ctx*; reading any other address is undefined.
    """
    words = (ctypes.c_uint32 * 8).from_address(ctx)
    return int(words[0]), int(words[1]), int(words[4])


def syncfs(fd: int, libc: Any | None = None) -> None:
    """syncfs(2): flush the whole filesystem holding *fd* (one barrier for many files).

    Used by the image rewrite to make a thousand temp files durable at once
    instead of a thousand fsync(2) calls. Raises OSError like every call here.
    """
    lib = libc if libc is not None else _load_libc()
    func = lib.syncfs
    func.argtypes = (ctypes.c_int,)
    func.restype = ctypes.c_int
    if func(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "syncfs")
