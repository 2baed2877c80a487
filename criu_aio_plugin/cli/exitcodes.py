"""Exit codes shared by every criu-aio subcommand (documented in each --help).

The same number means the same thing everywhere, so scripts can branch on it.
"""

OK = 0  # nothing wrong: the formula is right / nothing to do / fine as is
ERROR = 1  # could not do the job: bad image, missing CRIU, permission, kernel error
USAGE = 2  # bad command line (argparse's own code)
FIXABLE = 3  # CRIU alone would fail, criu-aio can fix it (fix: images were changed)
IMPOSSIBLE = 4  # some ring cannot exist on this host: no nr_req helps
BUDGET = 5  # fs.aio-max-nr cannot hold the rings right now
CRIU_CHECK_FAILED = 6  # CRIU's own `criu check` failed

DESCRIPTIONS = {
    OK: "ok / nothing to do",
    ERROR: "error (message on stderr)",
    USAGE: "usage error",
    FIXABLE: "CRIU alone would fail; criu-aio can fix it (fix: images changed)",
    IMPOSSIBLE: "some ring cannot exist on this host",
    BUDGET: "fs.aio-max-nr cannot hold the rings",
    CRIU_CHECK_FAILED: "CRIU's own check failed",
}


def epilog(*codes: int) -> str:
    """An --help epilog listing *codes* with their meaning."""
    lines = ["exit codes:"]
    lines += [f"  {c}  {DESCRIPTIONS[c]}" for c in codes]
    return "\n".join(lines)
