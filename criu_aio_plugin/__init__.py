"""criu-aio: restore CRIU checkpoints that hold Linux AIO rings on any kernel.

CRIU records, per AIO ring, an ``nr_req`` computed by a formula that assumes one
kernel's ring sizing; restores fail on kernels or hosts that size rings
differently. criu-aio asks the live kernel which nr_req reproduces each ring,
rewrites the checkpoint's mm images safely, and hands over to the real CRIU
through its own RPC.
"""

from criu_aio_plugin._version import __version__

__all__ = ["__version__"]
