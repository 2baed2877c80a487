"""``criu-aio check``: CRIU's own check plus the AIO ring-sizing check."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_kernel_option

if TYPE_CHECKING:
    from criu_aio_plugin.estimator.check import AioCheckReport
    from criu_aio_plugin.estimator.plan import RestorePlan
    from criu_aio_plugin.kernel.interface import Kernel

DESCRIPTION = """\
Run CRIU's own `criu check` (unless --aio-only; arguments this command does not
know are passed to it), then test CRIU's AIO nr_req formula on the kernel: for
every ring size from 1 to N pages (default: up to a ring whose CRIU nr_req reaches
8192 events), does io_setup(CRIU's nr_req) recreate a ring of exactly that size?
Sizes are classed: right; wrong but criu-aio converges (a restore through criu-aio
works); impossible here (smaller than the smallest ring this host can create).

With --images-dir DIR, check a checkpoint's rings instead: restorable here by
CRIU alone, only with criu-aio, or not at all."""

EXIT_CODES = (
    exitcodes.OK,
    exitcodes.FIXABLE,
    exitcodes.IMPOSSIBLE,
    exitcodes.BUDGET,
    exitcodes.CRIU_CHECK_FAILED,
    exitcodes.ERROR,
    exitcodes.USAGE,
)

_IMAGE_CLASS = {
    "fine": "restorable by CRIU alone",
    "rewrite": "restorable only with criu-aio",
    "impossible": "not restorable here",
    "budget": "not restorable now (fs.aio-max-nr)",
    "error": "not restorable: io_setup failed",
}


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=exitcodes.epilog(*EXIT_CODES)
        + "\n\nWith more than one problem the first in this order wins: error, CRIU's "
        "check failed, impossible, budget, fixable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--aio-only", action="store_true", help="skip CRIU's own `criu check`")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_kernel_option(p)
    p.add_argument(
        "--max-pages", type=int, default=None, metavar="N", help="check ring sizes 1..N pages"
    )
    p.add_argument("--images-dir", metavar="DIR", help="check this checkpoint's rings instead")
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


def _aio_exit(worst: str) -> int:
    return {
        "right": exitcodes.OK,
        "fine": exitcodes.OK,
        "fixable": exitcodes.FIXABLE,
        "rewrite": exitcodes.FIXABLE,
        "impossible": exitcodes.IMPOSSIBLE,
        "budget": exitcodes.BUDGET,
        "error": exitcodes.ERROR,
    }[worst]


def exit_code(aio_worst: str, criu: CriuCheck | None) -> int:
    code = _aio_exit(aio_worst)
    if code == exitcodes.ERROR:
        return code
    if criu is not None and not criu.ok:
        return exitcodes.CRIU_CHECK_FAILED
    return code


def size_table(report: AioCheckReport) -> list[str]:
    """Runs of consecutive ring sizes with the same class, one line each."""
    from criu_aio_plugin.estimator.check import CLASS_TEXT

    lines = [f"  {'pages':<11} {'class':<28} CRIU nr_req -> ring pages   criu-aio nr_req"]
    runs: list[list[Any]] = []
    for s in report.sizes:
        if runs and runs[-1][0] == s.klass and runs[-1][-1].pages == s.pages - 1:
            runs[-1].append(s)
        else:
            runs.append([s.klass, s])
    for klass, *sizes in runs:
        first, last = sizes[0], sizes[-1]
        span = f"{first.pages}" if first is last else f"{first.pages}-{last.pages}"
        criu = _span([s.criu_nr_req for s in sizes])
        got = _span([s.criu_ring_len // report.page_size for s in sizes])
        ours = _span([s.nr_req for s in sizes]) if klass in ("right", "fixable") else "-"
        lines.append(f"  {span:<11} {CLASS_TEXT[klass]:<28} {criu + ' -> ' + got:<25} {ours}")
    return lines


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _aio_text(report: AioCheckReport) -> str:
    head = (
        f"AIO ring sizing on {report.kernel_name}: {report.possible_cpus} possible CPUs, "
        f"{report.page_size}-byte pages, smallest ring "
        f"{report.smallest_ring_len // report.page_size} page(s)"
    )
    return "\n".join([head, *size_table(report), report.summary])


def _plan_text(plan: RestorePlan) -> str:
    lines = [f"AIO rings of the checkpoint on {plan.kernel_name}:"]
    for d in plan.decisions:
        lines.append(f"  {_IMAGE_CLASS.get(d.status, d.status)}: {d.message}")
    lines.append(plan.summary)
    return "\n".join(lines)


def _plan_json(plan: RestorePlan) -> dict[str, Any]:
    return {
        "kernel": plan.kernel_name,
        "status": plan.status,
        "summary": plan.summary,
        "budget_needed": plan.budget_needed,
        "headroom": plan.headroom,
        "rings": [
            {
                "file": d.ring.file,
                "pid": d.ring.pid,
                "ring_id": d.ring.ring_id,
                "ring_len": d.ring.ring_len,
                "nr_req": d.ring.nr_req,
                "status": d.status,
                "class": _IMAGE_CLASS.get(d.status, d.status),
                "new_nr_req": d.estimate.nr_req,
                "reason": d.estimate.reason,
            }
            for d in plan.decisions
        ],
    }


def run(argv: list[str], prog: str) -> int:
    args, extra = _parser(prog).parse_known_args(argv)
    if args.max_pages is not None and args.max_pages < 1:
        _parser(prog).error("--max-pages must be at least 1")
    from criu_aio_plugin.estimator.check import run_aio_check
    from criu_aio_plugin.estimator.plan import plan_rings
    from criu_aio_plugin.kernel.select import kernel_from_spec

    if args.profile and args.kernel:
        _parser(prog).error("--profile and --kernel both name the kernel: give one")
    criu = None if args.aio_only or args.profile else run_criu_check(args.criu, extra)
    kernel: Kernel
    if args.profile:
        from criu_aio_plugin.fleet.profiles import load
        from criu_aio_plugin.kernel.simulated import SimulatedKernel

        kernel = SimulatedKernel.from_profile(load(args.profile).document)
    else:
        kernel = kernel_from_spec(args.kernel)
    try:
        if args.images_dir:
            from criu_aio_plugin.images.mm import read_rings

            plan = plan_rings(kernel, read_rings(args.images_dir))
            worst = plan.status
            aio_doc: dict[str, Any] = {"checkpoint": _plan_json(plan)}
            aio_text = _plan_text(plan)
        else:
            report = run_aio_check(kernel, max_pages=args.max_pages)
            worst = report.worst
            aio_doc = {"aio": report.to_json()}
            aio_text = _aio_text(report)
    finally:
        kernel.close()
    code = exit_code(worst, criu)
    if args.json:
        doc: dict[str, Any] = {"schema": "criu-aio/check", "version": 1, "exit_code": code}
        if criu is not None:
            doc["criu"] = {"command": criu.command, "ok": criu.ok, "output": criu.output}
        doc.update(aio_doc)
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    if criu is not None:
        status = "ok" if criu.ok else f"FAILED (exit {criu.returncode})"
        print(f"criu check ({' '.join(criu.command)}): {status}")
        for line in criu.output.splitlines():
            print(f"  {line}")
    print(aio_text)
    return code
