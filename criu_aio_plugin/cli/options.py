"""Options several subcommands share, so they read and behave the same everywhere."""

from __future__ import annotations

import argparse

KERNEL_HELP = (
    "kernel to judge against: live (default), sim:KEY=VALUE,... (keys cpus, doubling, "
    "floor_per_cpu, page), sim:v3.10, agent:CMD; default from $CRIU_AIO_KERNEL"
)


def add_kernel_option(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--kernel SPEC`` (parsed later by ``kernel.select.kernel_from_spec``)."""
    p.add_argument("--kernel", metavar="SPEC", default=None, help=KERNEL_HELP + note)
