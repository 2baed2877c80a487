"""``criu-aio fix DIR``: rewrite nr_req in a checkpoint for this host, crash-safely."""

from __future__ import annotations

import argparse
import json
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.inspect import EXIT_CODES, parser, require_mm_images

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

Nothing is written when some ring cannot exist on this host, when the kernel
is not the live one (--kernel sim:...), or with --dry-run: the decision is
reported only."""

EPILOG = (
    exitcodes.epilog(*EXIT_CODES)
    + """

  fix: 0 = nothing to do (or --revert restored nothing); 3 = images were
  changed (--dry-run or a non-live kernel: would be changed; --revert: images
  restored); 4 = nothing written; 5 = the nr_req values were written but
  fs.aio-max-nr cannot hold the rings now (nothing written if some ring's
  nr_req could not be determined)."""
)


def _parser(prog: str) -> argparse.ArgumentParser:
    p = parser(prog, DESCRIPTION, EPILOG, "; only the live kernel allows writing")
    p.add_argument("--dry-run", action="store_true", help="decide and report; write nothing")
    p.add_argument(
        "--revert", action="store_true", help="restore the images criu-aio changed (journal)"
    )
    return p


def _revert(args: argparse.Namespace) -> int:
    from criu_aio_plugin.images.rewrite import revert

    result = revert(args.images_dir, dry_run=args.dry_run)
    if args.json:
        doc = {
            "images_dir": args.images_dir,
            "action": "revert",
            "written": result.written,
            "dry_run": args.dry_run,
            "changes": [
                {
                    "file": c.file,
                    "ring_id": f"{c.ring_id:#x}",
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
    return exitcodes.FIXABLE if result.files else exitcodes.OK


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    if args.revert:
        return _revert(args)
    from criu_aio_plugin.images.report import fix_images, table
    from criu_aio_plugin.kernel.select import kernel_from_spec

    require_mm_images(args.images_dir)
    kernel = kernel_from_spec(args.kernel)
    try:
        result = fix_images(args.images_dir, kernel, dry_run=args.dry_run)
    finally:
        kernel.close()
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return result.exit_code
    print(table(result.report))
    for line in result.applied.recovered if result.applied else ():
        print(line)
    for c in result.changes:
        verb = "changed" if result.written else "would change"
        print(f"{verb} {c.file}: ring {c.ring_id:#x} nr_req {c.old_nr_req} -> {c.new_nr_req}")
    if result.refused:
        print(result.refused)
    elif result.written:
        print(
            f"rewrote {len(result.applied.files) if result.applied else 0} image(s); "
            "journal: criu-aio.journal (undo with --revert)"
        )
    else:
        print("nothing to do")
    return result.exit_code
