"""``criu-aio fix DIR|ARCHIVE``: rewrite nr_req in a checkpoint for this host, crash-safely."""

from __future__ import annotations

import argparse
import json
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_checkpoint_argument, add_kernel_option, checkpoint_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from criu_aio_plugin.images.rewrite import ApplyResult

DESCRIPTION = """\
Rewrite the nr_req of every AIO ring that this kernel would not recreate from
the stored value, so that a plain `criu restore` works here. Only nr_req bytes
change; every other byte of every image stays.

The rewrite is one transaction: every new image is computed and verified
first, written to a temporary file beside it (same mode and owner) and
fsynced; a journal (criu-aio.journal) recording each file, ring, old and new
nr_req and the host facts is stored; then all files are renamed into place
and the directory is fsynced. An error before the renames changes nothing; a
crash at any instant leaves each image old or new, and the next run completes
the interrupted one. Runs on one directory take turns (flock); running again
changes nothing. `--revert` puts back, byte for byte, the images as they were
before criu-aio first changed them.

Nothing is written when some ring cannot exist on this host or has no known
nr_req, when the kernel is not the live one (--kernel sim:...), or with
--dry-run: the decision is reported only. When only the rings' total is over
fs.aio-max-nr, the nr_req values are written (they are right for this kernel
whatever the load) and the exit code (5) says a restore now would fail.

DIR may be a checkpoint archive (podman's --export, the kubelet's
checkpoint-*.tar; tar, gzip or zstd): the fixed archive has every member
byte-identical but the rewritten mm images, in the same order with the same
modes, owners and times, and the same compression. It replaces the archive
atomically (a temp file beside it, fsync, rename) or goes to --output NEW; the
journal is ARCHIVE.criu-aio.journal beside it (docs/archives.md)."""

EXIT_NOTE = """\
So `criu-aio fix DIR && criu restore -D DIR` restores exactly when it can. 3 only
with --dry-run or a non-live --kernel (nothing written). --revert exits 0 once
the images are as CRIU wrote them."""


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=exitcodes.epilog(*exitcodes.CHECKPOINT_CODES, note=EXIT_NOTE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_argument(p, "fix")
    p.add_argument("--json", action="store_true", help="print the verdict and the fix as JSON")
    add_kernel_option(p, "; only the live kernel allows writing")
    p.add_argument("--dry-run", action="store_true", help="decide and report; write nothing")
    p.add_argument(
        "--revert", action="store_true", help="restore the images criu-aio changed (journal)"
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="NEW",
        help="for an archive: write the fixed archive to NEW (a new file; the archive "
        "itself is left alone) instead of replacing it in place",
    )
    return p


def _revert_archive(path: str, args: argparse.Namespace) -> int:
    from criu_aio_plugin.images.archive import revert_archive

    done = revert_archive(path, dry_run=args.dry_run)
    return _print_revert(path, args, done.result)


def _revert(path: str, args: argparse.Namespace) -> int:
    from criu_aio_plugin.images.rewrite import revert

    return _print_revert(path, args, revert(path, dry_run=args.dry_run))


def _print_revert(path: str, args: argparse.Namespace, result: ApplyResult) -> int:
    if args.json:
        doc = {
            "schema": "criu-aio/revert",
            "version": 1,
            "checkpoint": path,
            "dry_run": args.dry_run,
            "written": result.written,
            "changes": [
                {
                    "file": c.file,
                    "ring": f"{c.ring_id:#x}",
                    "old_nr_req": c.old_nr_req,
                    "new_nr_req": c.new_nr_req,
                }
                for c in result.changes
            ],
            "files": list(result.files),
            "recovered": list(result.recovered),
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in result.recovered:
            print(line)
        verb = "would restore" if args.dry_run else "restored"
        for c in result.changes:
            print(f"{c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req}")
        if result.files:
            print(f"{verb} {len(result.files)} image(s) to their original bytes")
        else:
            print("nothing to revert")
    return exitcodes.OK


def run(argv: list[str], prog: str) -> int:
    p = _parser(prog)
    args = p.parse_args(argv)
    path = checkpoint_of(p, args)
    assert path is not None
    from criu_aio_plugin.cli.checkpoint import is_archive, open_checkpoint, require_mm_images

    archive = is_archive(path)
    if args.output is not None and not archive:
        p.error("--output is for checkpoint archives; an images directory is fixed in place")
    if args.revert:
        if args.output is not None:
            p.error("--revert undoes a fix in place; it takes no --output")
        return _revert_archive(path, args) if archive else _revert(path, args)
    from criu_aio_plugin.decision.decide import FIX, REPORT
    from criu_aio_plugin.kernel.select import kernel_from_spec
    from criu_aio_plugin.report.verdict import fix_json, not_written_reason, table

    kernel = kernel_from_spec(args.kernel)
    try:
        # Only a run that may write takes the lock and finishes an interrupted one.
        writer = not args.dry_run and kernel.is_live
        with open_checkpoint(path, write=writer, output=args.output) as cp:
            require_mm_images(cp)
            outcome = cp.examine(kernel, intent=FIX if writer else REPORT, changes=True)
    finally:
        kernel.close()
    d = outcome.decision
    source = getattr(cp, "archive", None)
    applied = getattr(cp, "applied", None)
    code = exitcodes.for_status(d.status, made_restorable=outcome.written)
    if args.json:
        doc = fix_json(outcome, dry_run=args.dry_run, archive=source)
        if source is not None:
            doc["fix"]["output"] = applied.archive if applied is not None else None
            doc["fix"]["journal"] = applied.journal if applied is not None else None
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    print(table(outcome.judgement, d, archive=source))
    for line in outcome.recovered:
        print(line)
    verb = "changed" if outcome.written else "would change"
    for c in outcome.changes:
        print(f"{verb} {c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req}")
    why = not_written_reason(outcome, dry_run=args.dry_run)
    if outcome.pending:
        why = (why + "; " if why else "") + (
            "an interrupted criu-aio run is pending: the next real run completes it first"
        )
    if why:
        print(why)
    elif outcome.written and applied is not None:
        print(
            f"rewrote {len(outcome.files)} mm image(s) in {applied.archive} "
            f"({applied.compression.value}); journal: {applied.journal} (undo with --revert)"
        )
    elif outcome.written:
        print(
            f"rewrote {len(outcome.files)} image(s); journal: criu-aio.journal (undo with --revert)"
        )
    elif applied is not None and applied.written:
        print(f"nothing to change: wrote {applied.archive} as a copy of {applied.source}")
    else:
        print("nothing to do")
    return code
