"""Crash-safe, journaled, revertible rewrite of nr_req in a checkpoint.

How a transaction runs (python-atomicwrites' recipe, for several files):

1. Lock: ``flock(LOCK_EX)`` on a fresh open of the images directory, so runs
   on one checkpoint (8 at once in the tests) take turns; no lock file needed
   (``lock``).
2. Recover: if the journal has ``pending``, the previous run died between its
   journal write and its last rename: roll it forward (see ``journal``). Then
   delete stale temp files (``.criu-aio-tmp.*``): under the lock none is live
   (``recovery``).
3. Compute every new image in memory (``splice``: only nr_req bytes change) and
   verify it by decoding it: the same mm_entry but for the nr_req values
   (``verify``).
4. Write each to ``.criu-aio-tmp.<name>`` in the same directory with the
   original's mode and owner, fsync it (``atomic``). Any failure here (ENOSPC,
   EACCES, a file that vanished or changed since it was read) removes the
   temps and leaves the checkpoint exactly as it was.
5. Store the journal with ``pending`` (atomic replace, fsync, directory fsync).
6. Rename every temp over its image, fsync the directory.
7. Store the journal without ``pending``.

Steps 3 to 7 are ``transaction``; ``revert`` runs the same transaction with the
journal's original bytes.

A crash before 5 leaves old images plus stale temps (removed by the next run);
a crash after 5 is rolled forward by the next run; rename(2) is atomic, so at
every instant each image is either the old or the new file, never torn.

Lean core (docs/architecture.md): a restore whose rings need new nr_req values
runs this package.
"""

from criu_aio_plugin.images.rewrite.atomic import sha256, write_temp
from criu_aio_plugin.images.rewrite.lock import ImagesDir, locked_dir
from criu_aio_plugin.images.rewrite.recovery import recover
from criu_aio_plugin.images.rewrite.revert import revert
from criu_aio_plugin.images.rewrite.transaction import (
    ApplyResult,
    RingChange,
    apply_fix,
    apply_fix_locked,
    plan_changes,
)
from criu_aio_plugin.images.rewrite.verify import read_back, verify_rewrite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.rewrite.recovery import Log as Log  # for annotations

__all__ = [
    "ApplyResult",
    "ImagesDir",
    "RingChange",
    "apply_fix",
    "apply_fix_locked",
    "locked_dir",
    "plan_changes",
    "read_back",
    "recover",
    "revert",
    "sha256",
    "verify_rewrite",
    "write_temp",
]
