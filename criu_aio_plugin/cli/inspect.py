"""``criu-aio inspect DIR``: every AIO ring of a checkpoint and its verdict here."""

from __future__ import annotations

import argparse
import json
import sys

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_kernel_option

DESCRIPTION = """\
List every AIO ring stored in the checkpoint's mm-<pid>.img files: pid, ring
address, ring length and pages, the nr_req CRIU stored, the nr_req this kernel
needs to recreate the ring, and a verdict: fine as is, needs rewrite (run
`criu-aio fix DIR`), impossible here (the ring is smaller than any ring this
host can create: restore on a host with fewer possible CPUs), or budget
(fs.aio-max-nr cannot hold the rings now). Reads only; never writes."""


# inspect and fix share their exit codes and their DIR/--json/--kernel options.
EXIT_CODES = (
    exitcodes.OK,
    exitcodes.FIXABLE,
    exitcodes.IMPOSSIBLE,
    exitcodes.BUDGET,
    exitcodes.ERROR,
    exitcodes.USAGE,
)


def parser(prog: str, description: str, epilog: str, kernel_note: str) -> argparse.ArgumentParser:
    """The parser of a command that reads an images directory against a kernel."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images_dir", metavar="DIR", help="the checkpoint's images directory")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_kernel_option(p, kernel_note)
    return p


def require_mm_images(images_dir: str) -> None:
    """Refuse a directory without any mm-<pid>.img: most likely the wrong one."""
    from criu_aio_plugin.errors import ImageError
    from criu_aio_plugin.images.mm import list_mm_images, open_images_dir

    with open_images_dir(images_dir) as (dir_fd, shown):
        if not list_mm_images(dir_fd, shown):
            raise ImageError(
                "no mm-<pid>.img in this directory",
                path=shown,
                hint="give the directory `criu dump -D` wrote the checkpoint to",
            )


def _parser(prog: str) -> argparse.ArgumentParser:
    p = parser(prog, DESCRIPTION, exitcodes.epilog(*EXIT_CODES), "")
    p.add_argument(
        "--k8s-affinity",
        action="store_true",
        help="print instead the Kubernetes nodeAffinity (JSON) admitting exactly the nodes "
        "whose criu-aio.io labels (`criu-aio profile --nfd`) say they can restore these rings",
    )
    return p


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    from criu_aio_plugin.images.mm import read_rings
    from criu_aio_plugin.images.report import assess, table
    from criu_aio_plugin.kernel.select import kernel_from_spec

    require_mm_images(args.images_dir)
    rings = read_rings(args.images_dir)
    if args.k8s_affinity:
        from criu_aio_plugin.fleet.k8s import node_affinity

        json.dump(node_affinity([r.ring_len for r in rings]), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exitcodes.OK
    kernel = kernel_from_spec(args.kernel)
    try:
        report = assess(args.images_dir, kernel, rings)
    finally:
        kernel.close()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(report))
    return report.exit_code
