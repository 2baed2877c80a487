"""Everything that touches, or stands in for, the kernel's AIO ring sizing.

- ``arithmetic``: the pure model of how a kernel turns io_setup(n) into a ring.
- ``interface``: the narrow ``Kernel`` protocol the estimator talks to, and its
  value types.
- ``syscalls``: the one module with ctypes bindings (io_setup & co).
- ``live`` / ``simulated`` (and ``agent``, for remote kernels): the implementations.
- ``select``: ``--kernel SPEC`` / ``CRIU_AIO_KERNEL`` parsing.
"""
