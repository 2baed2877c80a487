"""``criu-aio inspect DIR|ARCHIVE``: every AIO ring of a checkpoint and its status here."""

from __future__ import annotations

import argparse
import json
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_checkpoint_argument, add_kernel_option, checkpoint_of

DESCRIPTION = """\
List every AIO ring stored in the checkpoint's mm-<pid>.img files: pid, ring
address, ring length and pages, the nr_req CRIU stored, the nr_req a restore on
this kernel uses, and a status: fine (CRIU alone restores it), needs rewrite
(run `criu-aio fix DIR`, or restore through criu-aio), impossible here (the
ring is smaller than any ring this host can create: restore on a host with
fewer possible CPUs), over AIO budget (fs.aio-max-nr cannot hold the rings
now). Reads only; never writes. --json prints the verdict document
(docs/json-output.md).

DIR may be a checkpoint archive (podman's --export, the kubelet's
checkpoint-*.tar; tar, gzip or zstd, told by content): it is read without
being extracted, page files skipped, and the container it holds (name, image,
runtime) is shown beside every ring (docs/archives.md)."""

EXIT_CODES = exitcodes.CHECKPOINT_CODES


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=exitcodes.epilog(*EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_argument(p, "inspect")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON document")
    add_kernel_option(p)
    p.add_argument(
        "--k8s-affinity",
        action="store_true",
        help="print instead the Kubernetes nodeAffinity (JSON) admitting exactly the nodes "
        "whose criu-aio.io labels (`criu-aio profile --nfd`) say they can restore these rings",
    )
    return p


def run(argv: list[str], prog: str) -> int:
    p = _parser(prog)
    args = p.parse_args(argv)
    path = checkpoint_of(p, args)
    assert path is not None
    from criu_aio_plugin.cli.checkpoint import open_checkpoint, require_mm_images
    from criu_aio_plugin.decision.decide import REPORT
    from criu_aio_plugin.kernel.select import kernel_from_spec
    from criu_aio_plugin.report.verdict import table, verdict_json

    with open_checkpoint(path, write=False) as cp:
        require_mm_images(cp)
        if args.k8s_affinity:
            from criu_aio_plugin.fleet.k8s import node_affinity

            json.dump(node_affinity([r.ring_len for r in cp.rings]), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return exitcodes.OK
        kernel = kernel_from_spec(args.kernel)
        try:
            outcome = cp.examine(kernel, intent=REPORT)
        finally:
            kernel.close()
    j, d = outcome.judgement, outcome.decision
    source = getattr(cp, "archive", None)
    if args.json:
        json.dump(verdict_json(j, d, archive=source), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(j, d, archive=source))
    return exitcodes.for_status(d.status)
