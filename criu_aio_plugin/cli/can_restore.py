"""``criu-aio can-restore DIR --profile HOST.json ...``: which hosts can take a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_checkpoint_argument, checkpoint_of

DESCRIPTION = """\
Answer, for each host profile given (made with `criu-aio profile --json` on
that host), whether every AIO ring of the checkpoint in DIR can be restored
there: by CRIU alone (the stored nr_req already reproduce the rings), with
criu-aio (it rewrites nr_req), not now (fs.aio-max-nr minus the fs.aio-nr the
profile recorded cannot hold the events the rings need) or not at all (a ring
is smaller than the host's smallest ring, or not a whole number of its pages).
Also shows the AIO events the restore needs against each host's headroom.

The host is not contacted and the images are only read: each profile's ring
model drives a simulated kernel through the same judgement and decision a
restore on that host runs, so the answer is the one the host would give.
DIR may be a checkpoint archive (podman's --export, the kubelet's
checkpoint-*.tar): the answer is the same as for its extracted directory.
--json: every host's verdict document (docs/json-output.md)."""

EXIT_CODES = exitcodes.CHECKPOINT_CODES

_EPILOG_NOTE = """\
The code is the worst host's (error > impossible > budget > fixable > ok);
with --any it is the best host's, so 0 or 3 means some host can restore it."""


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=exitcodes.epilog(*EXIT_CODES, note=_EPILOG_NOTE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_argument(p, "place")
    p.add_argument(
        "--profile",
        metavar="HOST.json",
        action="append",
        default=[],
        help="a host profile (`criu-aio profile --json`); repeat for more hosts",
    )
    p.add_argument(
        "--profiles-dir",
        metavar="D",
        action="append",
        default=[],
        help="every *.json host profile in D (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--any",
        action="store_true",
        help="exit with the best host's code: 0/3 when at least one host can restore it",
    )
    return p


def run(argv: list[str], prog: str) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    path = checkpoint_of(parser, args)
    assert path is not None
    if not args.profile and not args.profiles_dir:
        parser.error("give at least one --profile HOST.json or --profiles-dir D")
    from criu_aio_plugin.cli.checkpoint import open_checkpoint, require_mm_images
    from criu_aio_plugin.fleet import placement, profiles

    hosts = profiles.load_all(args.profile, args.profiles_dir)
    with open_checkpoint(path, write=False) as cp:
        require_mm_images(cp)
        fleet = placement.place_all(cp.rings, hosts, cp.shown)
    code = exitcodes.for_status(fleet.status(any_host=args.any))
    source = getattr(cp, "archive", None)
    if args.json:
        doc = fleet.to_json(any_host=args.any)
        if source is not None:
            from criu_aio_plugin.report.verdict import archive_json

            doc["archive"] = archive_json(source)
        for host, verdict in zip(doc["hosts"], fleet.hosts, strict=True):
            host["exit_code"] = exitcodes.for_status(verdict.status)
        doc["exit_code"] = code
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if source is not None:
            from criu_aio_plugin.report.verdict import container_line

            print(container_line(source))
        print(placement.table(fleet))
    return code
