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


def add_checkpoint_argument(p: argparse.ArgumentParser, what: str = "check") -> None:
    """The checkpoint, as every command takes it: ``DIR`` or ``-D/--images-dir DIR``
    (an images directory or a checkpoint archive)."""
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="DIR",
        help=f"the checkpoint to {what}: its images directory, or a checkpoint archive "
        "(podman's --export, the kubelet's checkpoint-*.tar; tar, .tar.gz or .tar.zst, "
        "told by content) (or -D DIR)",
    )
    p.add_argument(
        "-D",
        "--images-dir",
        dest="images_dir_option",
        metavar="DIR",
        help="the same as DIR, spelled as CRIU spells it",
    )


def checkpoint_of(
    p: argparse.ArgumentParser, args: argparse.Namespace, *, required: bool = True
) -> str | None:
    """The checkpoint named by DIR or -D DIR (a usage error when both differ or none)."""
    positional: str | None = args.checkpoint
    option: str | None = args.images_dir_option
    if positional is not None and option is not None and positional != option:
        p.error(f"the checkpoint is given twice ({positional!r} and -D {option!r}): give one")
    path = positional if positional is not None else option
    if required and path is None:
        p.error("give the checkpoint's images directory or archive: DIR or -D DIR")
    return path
