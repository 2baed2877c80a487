"""What criu-aio costs in front of CRIU: restore, pass-through, peak RSS.

Side by side in one run, with the real CRIU and a real four-ring process (the
test bed's holder), each request sent the way libcriu/go-criu/runc do it
(socketpair, spawn `BINARY swrk <fd>`, one criu_req, wait for the criu_resp):

- restore, CRIU alone vs through criu-aio, on a checkpoint whose nr_req are
  already right (criu-aio reads the rings, confirms them on the live kernel,
  hands over): the added median is criu-aio's whole cost on a restore;
- restore through criu-aio of the same checkpoint with nr_req forged as another
  CRIU build writes them (CRIU alone cannot restore it at all): estimate +
  transactional rewrite + hand-over;
- the first through the launcher with an empty per-boot cache each time
  ("cold", as on the first restore of these ring sizes after boot: the probe
  worker starts, calibrates and confirms every size);
- VERSION (pass-through, no protobuf), CRIU alone vs criu-aio;
- peak RSS: the kernel keeps a process's maximum RSS across exec
  (signal->maxrss, updated in exec_mmap), so the ru_maxrss of the spawned
  process covers criu-aio *and* the CRIU it became; the shim alone is measured
  by handing over to /bin/true instead of CRIU. A child forked from this (big)
  Python would start with our RSS in that maximum, so the RSS runs are spawned
  by GNU time (/usr/bin/time -f %M), a small parent.

criu-aio is started through the `install-shim` launcher (python -IS) and, for
comparison, through the `criu-aio` console script (site processing).

Targets: <= 30 ms added median on restore (goal 15); <= 10 ms on pass-through;
<= 30 MB peak RSS of the shim.
Run (root, CRIU provisioned): python benchmarks/bench_interposer.py [--reps N]
[--baseline OTHER_CHECKOUT] (that checkout interleaved with this one: before/after).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from testbed.harness import (  # noqa: E402
    Criu,
    PyCriu,
    kill_pids,
    n_for_pages,
    start_holder,
    subreaper,
    wait_gone,
)

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2  # noqa: E402
from criu_aio_plugin.cli.install_shim import install  # noqa: E402
from criu_aio_plugin.criu_locate import PROVISIONED_PATH_FILE, find_criu  # noqa: E402

RINGS = [n_for_pages(p) for p in (1, 2, 3, 5)]  # four rings of distinct sizes


def swrk_call(
    binary: str, req: rpc_pb2.criu_req, env: dict[str, str], cpu: list[float] | None = None
) -> tuple[float, bool, int]:
    """Spawn BINARY swrk <fd>, send *req*, wait for the answer and the exit.

    Returns (seconds from spawn to answer, success, ru_maxrss in KiB; the last
    is inflated by the fork from this process, see ``rss_kib``). With *cpu*,
    the child's CPU seconds (user + system, whatever it exec'd included) are
    appended to it: less disturbed than wall time on a shared machine.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.set_inheritable(theirs.fileno(), True)
    data = req.SerializeToString()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execve(binary, [binary, "swrk", str(theirs.fileno())], env)
        finally:
            os._exit(127)
    theirs.close()
    ours.send(data)
    resp = rpc_pb2.criu_resp()
    try:
        raw = ours.recv(1 << 20)
    except ConnectionResetError:  # /bin/true standing in for CRIU never reads it
        raw = b""
    elapsed = time.perf_counter() - start
    ours.close()
    _, _status, usage = os.wait4(pid, 0)
    if cpu is not None:
        cpu.append(usage.ru_utime + usage.ru_stime)
    if raw:
        resp.ParseFromString(raw)
    return elapsed, bool(raw) and resp.success, usage.ru_maxrss


def rss_kib(binary: str, req: rpc_pb2.criu_req, env: dict[str, str], out: Path) -> int:
    """Peak RSS (KiB) of BINARY swrk <fd> and whatever it execs, spawned by GNU time."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", str(out), binary, "swrk", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        ours.send(req.SerializeToString())
        with contextlib.suppress(ConnectionResetError):  # /bin/true never reads it
            ours.recv(1 << 20)
        proc.wait(120)
    finally:
        ours.close()
        theirs.close()
    return int(out.read_text().split()[-1])


PASS_THROUGH_MODULES = (
    "criu_aio_plugin.cli.main criu_aio_plugin.rpc.swrk criu_aio_plugin.criu_locate"
)
IMPORT_SETS = [
    ("interpreter alone", ""),
    ("pass-through (swrk, criu_locate)", PASS_THROUGH_MODULES),
    ("+ image reading (images.mm)", "criu_aio_plugin.rpc.aio_work criu_aio_plugin.images.mm"),
    (
        "+ estimator (plan, live kernel)",
        "criu_aio_plugin.rpc.aio_work criu_aio_plugin.images.mm "
        "criu_aio_plugin.decision.checkpoint criu_aio_plugin.kernel.select "
        "criu_aio_plugin.kernel.live",
    ),
    (
        "+ rewrite (images.rewrite)",
        "criu_aio_plugin.rpc.aio_work criu_aio_plugin.images.mm "
        "criu_aio_plugin.decision.checkpoint criu_aio_plugin.kernel.select "
        "criu_aio_plugin.kernel.live criu_aio_plugin.images.rewrite",
    ),
]


def import_ms(launcher: str, modules: str, reps: int) -> float:
    """Median wall time of the launcher's interpreter importing *modules* (sys.path as it sets)."""
    text = Path(launcher).read_text()
    python = text.split("\n", 1)[0][2:].split()[0]
    path_line = next(line for line in text.splitlines() if line.startswith("sys.path"))
    code = "import sys\n" + path_line + "\n" + "".join(f"import {m}\n" for m in modules.split())
    subprocess.run([python, "-IS", "-c", code], check=True)  # warm the page cache
    times = []
    for _ in range(max(reps, 15)):
        start = time.perf_counter()
        subprocess.run([python, "-IS", "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return median_ms(times)


def restore_req(images: Path) -> tuple[rpc_pb2.criu_req, int]:
    fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
    req.opts.images_dir_fd = fd
    req.opts.log_file = "restore.log"
    return req, fd


_OLD_NAMES = {"criu_aio_plugin.decision.checkpoint": "criu_aio_plugin.estimator.plan"}


def _exists_in(src: str, module: str) -> bool:
    rel = Path(src, *module.split("."))
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument(
        "--baseline",
        metavar="SRC",
        help="also run another checkout of criu-aio (its root folder, protos compiled), "
        "interleaved with this one: before/after side by side in one run",
    )
    ap.add_argument(
        "--pass-through-only",
        action="store_true",
        help="only VERSION, CRIU alone vs the launcher (no holder, no restore; quick)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (CRIU restore)", file=sys.stderr)
        return 2
    provisioned = Path(PROVISIONED_PATH_FILE)
    recorded = provisioned.read_text().strip() if provisioned.is_file() else ""
    criu_bin = os.environ.get("CRIU_AIO_CRIU") or recorded or find_criu()
    if args.pass_through_only:
        return _bench_pass_through(args.reps, criu_bin)
    pycriu = PyCriu.locate()
    with subreaper():  # restored roots become ours: killed, they are reaped at once
        return _bench(args.reps, criu_bin, pycriu, args.baseline)


def _bench_pass_through(reps: int, criu_bin: str) -> int:
    """VERSION through the launcher vs CRIU alone: what the hand-over path costs."""
    work = Path(tempfile.mkdtemp(prefix="bench-passthrough-"))
    try:
        launcher = install(str(work / "shim"))
        # A config file as scripts/setup.sh writes it: every swrk reads and parses it.
        conf = work / "config.toml"
        conf.write_text(
            f'# criu-aio configuration\ncriu = "{criu_bin}"\n# kernel = "live"\n'
            'check_policy = "formula"\nlog = "none"\nlog_level = "info"\n'
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CRIU_AIO_CRIU": criu_bin,
            "CRIU_AIO_LOG": "none",
            "CRIU_AIO_CONFIG": str(conf),
        }
        version = rpc_pb2.criu_req(type=rpc_pb2.VERSION)
        alone: list[float] = []
        shim: list[float] = []
        alone_cpu: list[float] = []
        shim_cpu: list[float] = []
        for _ in range(reps * 2):  # interleaved, so drift hits both alike
            alone.append(swrk_call(criu_bin, version, env, alone_cpu)[0])
            shim.append(swrk_call(launcher, version, env, shim_cpu)[0])
        a, s = median_ms(alone), median_ms(shim)
        ac, sc = median_ms(alone_cpu), median_ms(shim_cpu)
        print(f"VERSION (pass-through), {reps * 2} reps interleaved; wall / CPU (user+sys):")
        print(f"  CRIU alone  median {a:7.2f} ms / {ac:6.2f} ms")
        added = f"added +{s - a:6.2f} / +{sc - ac:6.2f} ms"
        print(f"  launcher    median {s:7.2f} ms / {sc:6.2f} ms  {added}")
        bare = import_ms(launcher, "", reps)
        core = import_ms(launcher, PASS_THROUGH_MODULES, reps)
        print(f"  bare interpreter {bare:6.2f} ms; + swrk path imports {core - bare:6.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def baseline_launcher(src: str, directory: Path) -> str:
    """A launcher like install-shim's, for the criu-aio checkout at *src*."""
    import google.protobuf

    directory.mkdir(parents=True)
    proto_root = str(Path(google.protobuf.__file__).resolve().parents[2])
    path = directory / "criu"
    path.write_text(
        f"#!{sys.executable} -IS\nimport sys\n"
        f"sys.path[:0] = {[str(Path(src).resolve()), proto_root]!r}\n"
        "from criu_aio_plugin.cli.main import main\nraise SystemExit(main())\n"
    )
    path.chmod(0o755)
    return str(path)


def _bench(reps: int, criu_bin: str, pycriu: PyCriu | None, baseline: str | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-interposer-"))
    launcher = install(str(work / "shim"))
    base = baseline_launcher(baseline, work / "baseline") if baseline else None
    script = shutil.which("criu-aio") or str(Path(sys.executable).parent / "criu-aio")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CRIU_AIO_CRIU": criu_bin,
        "CRIU_AIO_LOG": "none",
    }
    holder = start_holder(work / "holder", RINGS)
    pids = list(holder.pids.values())
    good = work / "images-good"
    run = holder.dump(Criu(criu_bin), good)
    if not run.ok:
        print(run.describe(), file=sys.stderr)
        return 1
    forged = work / "images-forged"
    shutil.copytree(good, forged)
    if pycriu is not None:
        mm = forged / f"mm-{holder.pid}.img"
        pycriu.set_nr_req(mm, {a["id"]: (a["ring_len"] - 32) // 32 - 2 for a in pycriu.aios(mm)})

    def restore(
        binary: str, images: Path, fresh: Path | None = None, env_: dict[str, str] | None = None
    ) -> tuple[float, bool, int]:
        if fresh is not None:  # the forged images again (the last run rewrote them)
            for img in fresh.glob("mm-*.img"):
                shutil.copy2(img, images / img.name)
            (images / "criu-aio.journal").unlink(missing_ok=True)
        req, fd = restore_req(images)
        try:
            result = swrk_call(binary, req, env_ or env)
        finally:
            os.close(fd)
            kill_pids(pids, str(holder.binary))
            left = wait_gone(pids)
            assert not left, f"restored pids {left} still there"
        return result

    pristine = work / "pristine-forged"
    shutil.copytree(forged, pristine)
    series: dict[str, list[tuple[float, bool, int]]] = {
        "alone": [],
        "launcher": [],
        "script": [],
        "launcher-cold": [],
        "launcher-forged": [],
        "baseline": [],
        "baseline-forged": [],
    }

    def cold_restore() -> tuple[float, bool, int]:
        cold_cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=work))
        return restore(launcher, good, env_={**env, "CRIU_AIO_CACHE_DIR": str(cold_cache)})

    runs: dict[str, Callable[[], tuple[float, bool, int]]] = {
        "alone": lambda: restore(criu_bin, good),
        "launcher": lambda: restore(launcher, good),
        "script": lambda: restore(script, good),
        "launcher-cold": cold_restore,
    }
    if pycriu is not None:
        runs["launcher-forged"] = lambda: restore(launcher, forged, pristine)
    if base is not None:
        runs["baseline"] = lambda: restore(base, good)
        if pycriu is not None:
            runs["baseline-forged"] = lambda: restore(base, forged, pristine)
    order = random.Random(0x5EED)
    for _ in range(reps):  # interleaved, a new order each round: drift and order hit all alike
        names = list(runs)
        order.shuffle(names)
        for name in names:
            series[name].append(runs[name]())
    version = rpc_pb2.criu_req(type=rpc_pb2.VERSION)
    vruns = {"alone": criu_bin, "launcher": launcher, "script": script}
    if base is not None:
        vruns["baseline"] = base
    vseries: dict[str, list[tuple[float, bool, int]]] = {name: [] for name in vruns}
    for _ in range(reps * 2):
        names = list(vruns)
        order.shuffle(names)
        for name in names:
            vseries[name].append(swrk_call(vruns[name], version, env))
    true_env = {**env, "CRIU_AIO_CRIU": "/bin/true"}
    rss_file = work / "rss.txt"
    rss: dict[str, int] = {}
    rss["CRIU alone, VERSION"] = rss_kib(criu_bin, version, env, rss_file)
    rss["shim, VERSION (to /bin/true)"] = rss_kib(launcher, version, true_env, rss_file)
    if pycriu is not None:
        worst = 0
        for _ in range(3):
            for img in pristine.glob("mm-*.img"):
                shutil.copy2(img, forged / img.name)
            (forged / "criu-aio.journal").unlink(missing_ok=True)
            req, fd = restore_req(forged)
            worst = max(worst, rss_kib(launcher, req, true_env, rss_file))
            os.close(fd)
        rss["shim, RESTORE + rewrite (to /bin/true)"] = worst
    req, fd = restore_req(good)
    try:
        rss["CRIU alone, RESTORE"] = rss_kib(criu_bin, req, env, rss_file)
    finally:
        os.close(fd)
        kill_pids(pids, str(holder.binary))
        wait_gone(pids)
    req, fd = restore_req(good)
    try:
        rss["shim then CRIU, RESTORE"] = rss_kib(launcher, req, env, rss_file)
    finally:
        os.close(fd)
        kill_pids(pids, str(holder.binary))
        wait_gone(pids)

    def report(title: str, data: dict[str, list[tuple[float, bool, int]]], base: str) -> None:
        print(title)
        ref = median_ms([t for t, _, _ in data[base]])
        for name, rows in data.items():
            if not rows:
                continue
            ok = sum(1 for _, s, _ in rows if s)
            med = median_ms([t for t, _, _ in rows])
            extra = "" if name == base else f"  +{med - ref:6.2f} ms  x{med / ref:5.2f}"
            print(f"  {name:16s} median {med:7.2f} ms  (ok {ok}/{len(rows)}){extra}")

    print(f"CRIU: {criu_bin}; launcher: {launcher}; console script: {script}")
    print(f"checkpoint: one process, {len(RINGS)} AIO rings; {reps} reps, interleaved")
    report("restore (nr_req right; criu-aio confirms and hands over):", series, "alone")
    report("VERSION (pass-through):", vseries, "alone")
    print("peak RSS (max over the process and what it execs; spawned by GNU time):")
    for label, kib in rss.items():
        print(f"  {label:40s} {kib / 1024:6.1f} MB")
    print("where the shim's time goes (python -IS, median of wall time to import):")
    for label, mods in IMPORT_SETS:
        line = f"  {label:34s} {import_ms(launcher, mods, reps):7.2f} ms"
        if base is not None and baseline is not None:
            # Before the decision layer, estimator.plan held the judgement.
            then = [m if _exists_in(baseline, m) else _OLD_NAMES.get(m, m) for m in mods.split()]
            known = " ".join(m for m in then if _exists_in(baseline, m))
            line += f"   baseline {import_ms(base, known, reps):7.2f} ms"
        print(line)
    print(
        "targets: restore +<=30 ms (goal 15), pass-through +<=10 ms, peak RSS <= 30 MB; "
        "this process's own max RSS: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
