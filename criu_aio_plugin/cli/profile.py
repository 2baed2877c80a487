"""``criu-aio profile``: this host's ring-sizing facts, as text or versioned JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.options import add_kernel_option

DESCRIPTION = """\
Print the facts that decide how this kernel sizes AIO rings: kernel release,
page size, possible CPUs, the learned model (doubling, per-CPU floor), the
smallest ring io_setup can create, fs.aio-max-nr and fs.aio-nr. --json prints
the versioned host profile (schema criu-aio/host-profile, version 1) that fleet
placement reads and that `--kernel` of other hosts' tools can be rebuilt from."""


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=exitcodes.epilog(exitcodes.OK, exitcodes.ERROR, exitcodes.USAGE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the host profile as JSON")
    out.add_argument(
        "--nfd",
        action="store_true",
        help="print Node Feature Discovery local-feature lines (criu-aio.io/... labels; "
        "see examples/kubernetes/README.md)",
    )
    add_kernel_option(p)
    return p


def _formula_text(doc: dict[str, Any]) -> str:
    """Where CRIU's dump-side nr_req recreates the ring on this host, as page ranges.

    Not "right from N pages up": without the doubling (v3.10) it is right for
    the first sizes and wrong afterwards.
    """
    from criu_aio_plugin.estimator.check import compact_ranges, default_max_pages
    from criu_aio_plugin.estimator.profile import arithmetic_from_profile
    from criu_aio_plugin.kernel.arithmetic import criu_formula

    arith = arithmetic_from_profile(doc)
    page = arith.page_size
    top = default_max_pages(page)
    sizes = range(1, top + 1)
    impossible = [p for p in sizes if p * page < arith.smallest_ring_len]
    right = [
        p
        for p in sizes
        if p not in impossible and arith.ring_len(max(1, criu_formula(p * page))) == p * page
    ]
    wrong = [p for p in sizes if p not in impossible and p not in right]
    parts = [f"right for {compact_ranges(right)} pages"] if right else []
    if wrong:
        parts.append(f"wrong for {compact_ranges(wrong)} (criu-aio converges)")
    if impossible:
        parts.append(f"{compact_ranges(impossible)} pages cannot exist here")
    return "; ".join(parts) + f" (of 1-{top} pages)"


def profile_text(doc: dict[str, Any]) -> str:
    host, rs, smallest, aio = doc["host"], doc["ring_sizing"], doc["smallest_ring"], doc["aio"]
    model = (
        f"{'doubling' if rs['doubling'] else 'no doubling'}, floor "
        f"{rs['floor_per_cpu']} events per possible CPU ({rs['floor_events']} events)"
        if rs["calibrated"]
        else "no model fits this kernel's answers (estimates converge by search)"
    )
    formula = _formula_text(doc)
    rows = [
        ("kernel", f"{doc['kernel']} ({host['kernel_release']}, {host['machine']})"),
        ("boot id", host["boot_id"]),
        ("page size", f"{host['page_size']} bytes"),
        ("possible CPUs", str(host["possible_cpus"])),
        ("ring sizing", model),
        (
            "smallest ring",
            f"{smallest['len']} bytes ({smallest['pages']} page(s), nr {smallest['nr']})",
        ),
        (
            "CRIU's formula",
            formula,
        ),
        (
            "fs.aio-max-nr",
            f"{aio['max_nr']} (fs.aio-nr {aio['nr']} in use, {aio['headroom']} free)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    from criu_aio_plugin.estimator.model import default_store
    from criu_aio_plugin.estimator.profile import profile_document
    from criu_aio_plugin.kernel.select import kernel_from_spec

    kernel = kernel_from_spec(args.kernel)
    try:
        store = default_store(kernel)
        know = store.load(kernel)
        doc = profile_document(kernel, know)
        store.save(kernel, know)
    finally:
        kernel.close()
    if args.nfd:
        from criu_aio_plugin.fleet import k8s

        labels = k8s.nfd_labels(k8s.node_facts_from_profile(doc), profile_version=doc["version"])
        source = f"{doc['host']['hostname']}: {doc['host']['kernel_release']}"
        sys.stdout.write(k8s.nfd_feature_file(labels, source=source))
    elif args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(profile_text(doc))
    return exitcodes.OK
