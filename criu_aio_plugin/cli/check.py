"""``criu-aio check``: CRIU's own check plus the AIO ring-sizing check."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_checkpoint_argument, add_kernel_option, checkpoint_of

if TYPE_CHECKING:
    from criu_aio_plugin.kernel.interface import Kernel
    from criu_aio_plugin.status import Status

DESCRIPTION = """\
Run CRIU's own `criu check` (unless --aio-only; arguments after `--` are passed
to it), then test CRIU's AIO nr_req formula on the kernel: for every ring size
from 1 to N pages (default: up to a ring whose CRIU nr_req reaches 8192 events),
does io_setup(CRIU's nr_req) recreate a ring of exactly that size? Each size
gets a status: fine (CRIU's formula is right), needs rewrite (wrong, but a
restore through criu-aio converges), impossible here (smaller than the smallest
ring this host can create).

With a checkpoint (DIR or -D DIR), check its rings instead: the same verdict as
`criu-aio inspect DIR`."""

EXIT_CODES = (
    exitcodes.OK,
    exitcodes.FIXABLE,
    exitcodes.IMPOSSIBLE,
    exitcodes.BUDGET,
    exitcodes.CRIU_CHECK_FAILED,
    exitcodes.ERROR,
    exitcodes.USAGE,
)


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [options] [DIR | -D DIR] [-- CRIU-CHECK-ARGS...]",
        description=DESCRIPTION,
        epilog=exitcodes.epilog(
            *EXIT_CODES, note="With more than one problem the most severe code wins."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_argument(p, "check")
    p.add_argument("--aio-only", action="store_true", help="skip CRIU's own `criu check`")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_kernel_option(p)
    p.add_argument(
        "--max-pages", type=int, default=None, metavar="N", help="check ring sizes 1..N pages"
    )
    p.add_argument(
        "--profile",
        metavar="HOST.json",
        help="check the host this profile (`criu-aio profile --json`) describes instead of "
        "this kernel; implies --aio-only",
    )
    p.add_argument("--criu", metavar="PATH", help="the real CRIU (default: $CRIU_AIO_CRIU, PATH)")
    return p


@dataclass(frozen=True)
class CriuCheck:
    command: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_criu_check(explicit: str | None, extra: list[str]) -> CriuCheck:
    """Run the real `criu check EXTRA...` and capture what it says."""
    from criu_aio_plugin.criu_locate import criu_command, find_criu
    from criu_aio_plugin.errors import CriuError

    cmd = [*criu_command(find_criu(explicit)), "check", *extra]
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as err:
        raise CriuError(f"cannot run {cmd[0]}: {err.strerror}", errno=err.errno) from err
    return CriuCheck(cmd, done.returncode, (done.stdout + done.stderr).strip())


def exit_code(status: Status, criu: CriuCheck | None) -> int:
    codes = [exitcodes.for_status(status)]
    if criu is not None and not criu.ok:
        codes.append(exitcodes.CRIU_CHECK_FAILED)
    return exitcodes.worst_code(codes)


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and CRIU's (everything after the first `--`)."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def run(argv: list[str], prog: str) -> int:
    p = _parser(prog)
    ours, extra = _split_passthrough(argv)
    args = p.parse_args(ours)
    if args.max_pages is not None and args.max_pages < 1:
        p.error("--max-pages must be at least 1")
    if args.profile and args.kernel:
        p.error("--profile and --kernel both name the kernel: give one")
    if extra and (args.aio_only or args.profile):
        p.error("arguments after `--` go to `criu check`, which --aio-only/--profile skip")
    path = checkpoint_of(p, args, required=False)
    from criu_aio_plugin.estimator.check import run_aio_check
    from criu_aio_plugin.kernel.select import kernel_from_spec

    criu = None if args.aio_only or args.profile else run_criu_check(args.criu, extra)
    kernel: Kernel
    if args.profile:
        from criu_aio_plugin.estimator.profile import kernel_from_profile
        from criu_aio_plugin.fleet.profiles import load

        kernel = kernel_from_profile(load(args.profile).document)
    else:
        kernel = kernel_from_spec(args.kernel)
    doc: dict[str, Any] = {"schema": "criu-aio/check", "version": 2}
    try:
        if path is not None:
            from criu_aio_plugin.cli.checkpoint import open_checkpoint, require_mm_images
            from criu_aio_plugin.decision.decide import REPORT
            from criu_aio_plugin.report.verdict import table, verdict_json

            with open_checkpoint(path, write=False) as cp:
                require_mm_images(cp)
                outcome = cp.examine(kernel, intent=REPORT)
            status = outcome.decision.status
            source = getattr(cp, "archive", None)
            doc["checkpoint"] = verdict_json(outcome.judgement, outcome.decision, archive=source)
            aio_text = table(outcome.judgement, outcome.decision, archive=source)
        else:
            from criu_aio_plugin.report import aio_check

            report = run_aio_check(kernel, max_pages=args.max_pages)
            status = report.worst
            doc["aio"] = aio_check.to_json(report)
            aio_text = aio_check.text(report)
    finally:
        kernel.close()
    code = exit_code(status, criu)
    if args.json:
        doc["exit_code"] = code
        if criu is not None:
            doc["criu"] = {"command": criu.command, "ok": criu.ok, "output": criu.output}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    if criu is not None:
        state = "ok" if criu.ok else f"FAILED (exit {criu.returncode})"
        print(f"criu check ({' '.join(criu.command)}): {state}")
        for line in criu.output.splitlines():
            print(f"  {line}")
    print(aio_text)
    return code
