"""``criu-aio demo``: the main job end to end, in a few seconds, on this machine.

1. build the ring holder (criu_aio_plugin/demo/holder.c) with gcc, into a
   temporary folder: a small C program that holds Linux AIO rings and reports
   on them (JSON) when signalled. It ships as source, not as a binary: gcc is
   part of the set-up (scripts/setup.sh), a binary would be one more
   architecture-specific artefact to build and trust, and building it takes
   ~0.2 s;
2. start it holding three rings (1, 2 and 3 pages; two completed events
   left unread in one of them);
3. checkpoint it with the real CRIU;
4. make the checkpoint look written elsewhere: nr_req as a CRIU build that
   assumes a kernel without io_setup's doubling stores it;
5. restore with CRIU alone: it fails (``wrong aio``), as on the hosts in
   CRIU's tracker;
6. restore through criu-aio (``criu-aio restore``, a launcher written here):
   the rings are rewritten for this kernel and CRIU restores the process;
7. ask the restored process about its rings: same addresses and sizes, the
   unread events delivered with the right data, new I/O works on every ring;
8. judge the checkpoint for a host where these rings cannot exist (a
   simulated kernel with enough possible CPUs): refused before CRIU starts,
   with the reason, exit code 4, images unchanged;
9. clean up: every process stopped and reaped, the folder removed.

Needs root (CRIU), gcc and the real CRIU (the ``criu`` setting or PATH).
Exit code 0 when every step went as described, 1 when one did not (the step
says what happened instead), 2 for usage.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.errors import CriuAioError

HOLDER_SOURCE = Path(__file__).resolve().parent.parent / "demo" / "holder.c"
PAGE = os.sysconf("SC_PAGE_SIZE")
RING_PAGES = (1, 2, 3)
PENDING = {2: 2}  # pages -> completed events left unread in that ring
TIMEOUT = 120.0


class DemoFailed(CriuAioError):
    """A step did not go as the demo describes."""


def _nr_req_for_pages(pages: int) -> int:
    """CRIU's own nr_req for a ring of *pages* pages: what the holder asks io_setup for."""
    return ((pages * PAGE - 32) // 32 - 2) // 2


def _other_build_nr_req(ring_len: int) -> int:
    """nr_req as a CRIU build assuming no doubling in io_setup stores it: k - 2."""
    return (ring_len - 32) // 32 - 2


class Demo:
    def __init__(self, work: Path, criu: str, out: Any) -> None:
        self.work = work
        self.criu = criu
        self.out = out
        self.pid = 0
        self.step = 0

    # --- output -------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.step += 1
        print(f"[{self.step}/8] {text}", file=self.out, flush=True)

    def detail(self, text: str) -> None:
        print(f"      {text}", file=self.out, flush=True)

    # --- processes ------------------------------------------------------------------

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def reap(self) -> None:
        """Reap whatever became our child (we are a subreaper) and has exited."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def report(self, sig: int) -> dict[str, Any]:
        """Signal the holder and read the report it writes (SIGUSR2: exercise first)."""
        path = self.work / "reports" / "root.json"
        path.unlink(missing_ok=True)
        os.kill(self.pid, sig)
        deadline = time.monotonic() + 20
        while not path.exists():
            if time.monotonic() > deadline:
                raise DemoFailed(f"the holder (pid {self.pid}) did not report")
            time.sleep(0.005)
        report: dict[str, Any] = json.loads(path.read_text())
        return report

    def wait_gone(self) -> None:
        """Until the holder's pid is free again (reaped: a restore needs that very pid)."""
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{self.pid}"):
            self.reap()
            if time.monotonic() > deadline:
                raise DemoFailed(f"pid {self.pid} is still taken")
            time.sleep(0.005)

    def stop(self) -> None:
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        if self.pid:
            self.wait_gone()
        self.reap()

    # --- steps ------------------------------------------------------------------------

    def build(self) -> Path:
        binary = self.work / "holder"
        if shutil.which("gcc") is None:
            raise DemoFailed("gcc is not installed (scripts/setup.sh installs it)")
        built = self.run(["gcc", "-O2", "-o", str(binary), str(HOLDER_SOURCE)])
        if built.returncode != 0:
            raise DemoFailed(f"building the holder failed:\n{built.stderr}")
        self.say(f"built the ring holder with gcc ({HOLDER_SOURCE.name}, shipped with criu-aio)")
        return binary

    def start(self, binary: Path) -> dict[str, Any]:
        (self.work / "reports").mkdir()
        data = self.work / "data.bin"
        data.write_bytes(bytes(i % 251 for i in range(1 << 20)))
        argv = [str(binary), str(self.work / "reports"), str(data)]
        for pages in RING_PAGES:
            argv += ["-r", f"{_nr_req_for_pages(pages)}:{PENDING.get(pages, 0)}"]
        started = self.run(argv)
        if started.returncode != 0:
            raise DemoFailed(f"the holder did not start: {started.stderr.strip()}")
        first = json.loads((self.work / "reports" / "root.json").read_text())
        self.pid = first["pid"]
        rings = ", ".join(
            f"{r['ring_len'] // PAGE} page(s)"
            + (f" with {r['pending']} completed events unread" if r["pending"] else "")
            for r in first["rings"]
        )
        self.say(f"started pid {self.pid} holding {len(first['rings'])} AIO rings: {rings}")
        before = self.report(signal.SIGUSR1)
        return before

    def dump(self, images: Path) -> None:
        images.mkdir()
        start = time.monotonic()
        dumped = self.run(
            [self.criu, "dump", "-t", str(self.pid), "-D", str(images), "-o", "dump.log", "-v4"]
        )
        if dumped.returncode != 0:
            raise DemoFailed(
                f"criu dump failed; see {images}/dump.log:\n{_tail(images / 'dump.log')}"
            )
        self.wait_gone()
        self.say(
            f"CRIU checkpointed it (criu dump -t {self.pid}) in {time.monotonic() - start:.2f} s; "
            "the process is gone"
        )

    def forge(self, images: Path) -> None:
        from criu_aio_plugin.images import splice
        from criu_aio_plugin.images.mm import read_rings

        changes: list[str] = []
        by_file: dict[str, dict[int, int]] = {}
        for ring in read_rings(str(images)):
            forged = _other_build_nr_req(ring.ring_len)
            by_file.setdefault(ring.file, {})[ring.ring_id] = forged
            changes.append(f"{ring.nr_req} -> {forged}")
        for name, values in by_file.items():
            path = images / name
            path.write_bytes(splice.splice(path.read_bytes(), str(path), values))
        self.say(
            "made the checkpoint look written for another kernel: nr_req " + ", ".join(changes)
        )
        self.detail("(what a CRIU that assumes io_setup does not double the request stores)")

    def restore_alone(self, images: Path) -> None:
        pidfile = self.work / "alone.pid"
        argv = [self.criu, "restore", "-D", str(images), "-d", "--pidfile", str(pidfile)]
        alone = self.run([*argv, "-o", "restore-alone.log", "-v4"])
        self.wait_gone()  # the failed restore's tasks (our orphans, the same pid) are gone
        if alone.returncode == 0:
            self.pid = int(pidfile.read_text())
            raise DemoFailed("CRIU alone restored the forged checkpoint: nothing to show here")
        log = (images / "restore-alone.log").read_text(errors="replace")
        wrong = [line for line in log.splitlines() if "wrong aio" in line]
        self.say("CRIU alone cannot restore it, as expected:")
        self.detail(wrong[0].strip() if wrong else _tail(images / "restore-alone.log", 1))

    def restore_with_criu_aio(self, images: Path, launcher: str, log: Path) -> None:
        pidfile = self.work / "restored.pid"
        argv = [launcher, "restore", "-D", str(images), "-d", "--pidfile", str(pidfile)]
        argv += ["-o", "restore.log", "-v4"]
        restored = self.run(argv, CRIU_AIO_KERNEL="live", CRIU_AIO_LOG=str(log))
        self.reap()
        if restored.returncode != 0:
            raise DemoFailed(
                f"criu-aio restore failed (exit {restored.returncode}): {restored.stderr.strip()}"
                f"\n{_tail(images / 'restore.log')}"
            )
        self.pid = int(pidfile.read_text())
        rewrote = [
            line.split(": ", 1)[-1] for line in log.read_text().splitlines() if "rewrote" in line
        ]
        self.say(f"criu-aio restored it: criu-aio restore -D {images} -d (exit 0)")
        self.detail("criu-aio's log: " + (rewrote[-1] if rewrote else "handed over to CRIU"))

    def verify(self, before: dict[str, Any]) -> None:
        after = self.report(signal.SIGUSR1)
        exercised = self.report(signal.SIGUSR2)
        problems = []
        if after["pid"] != before["pid"]:
            problems.append(f"pid {after['pid']} != {before['pid']}")
        for old, new, ex in zip(before["rings"], after["rings"], exercised["rings"], strict=True):
            where = f"ring at {old['address']:#x}"
            for key in ("address", "ring_len", "nr", "head", "tail"):
                if old[key] != new[key]:
                    problems.append(f"{where}: {key} {new[key]} != {old[key]}")
            x = ex["exercise"]
            if x["reaped"] != old["pending"] or not (x["events_ok"] and x["data_ok"]):
                problems.append(f"{where}: {x['reaped']} of {old['pending']} unread events back")
            if not (x["write_ok"] and x["read_ok"] and x["roundtrip_ok"]):
                problems.append(f"{where}: a write + read-back failed (errno {x['submit_errno']})")
        if problems:
            raise DemoFailed("the restored rings are not right: " + "; ".join(problems))
        pending = sum(r["pending"] for r in before["rings"])
        self.say(f"the rings work in the restored pid {self.pid}:")
        self.detail(f"the same {len(after['rings'])} rings at the same addresses and sizes;")
        self.detail(f"the {pending} unread events came back with the right data;")
        self.detail("a write and a read-back went through every ring")

    def refuse(self, images: Path, launcher: str, largest_pages: int) -> None:
        # A kernel whose smallest ring (4 events per possible CPU, doubled) is
        # larger than the largest ring here: no nr_req can reproduce them there.
        cpus = 16 * largest_pages + 16
        before = _digests(images)
        argv = [launcher, "restore", "-D", str(images), "-d", "-o", "refused.log"]
        refused = self.run(argv, CRIU_AIO_KERNEL=f"sim:cpus={cpus}", CRIU_AIO_LOG="none")
        self.reap()
        if refused.returncode != exitcodes.IMPOSSIBLE:
            raise DemoFailed(
                f"expected a refusal (exit 4) on a {cpus}-CPU host, got exit "
                f"{refused.returncode}: {refused.stderr.strip()}"
            )
        unchanged = {k: v for k, v in _digests(images).items() if k != "refused.log"} == before
        if not unchanged:
            raise DemoFailed("the refused restore changed the images")
        self.say("a host where these rings cannot exist is refused before CRIU starts (exit 4)")
        self.detail(f"(a simulated host with {cpus} possible CPUs: kernel = sim:cpus={cpus}):")
        for line in _wrap(refused.stderr.strip(), 88):
            self.detail(line)
        self.detail("the images are unchanged; the reason is also in CRIU's log file,")
        self.detail(f"{images}/refused.log, where CRIU's users look")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(".log")
    }


def _wrap(text: str, width: int) -> Iterator[str]:
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            yield line
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        yield line


def _become_subreaper() -> None:
    """Adopt orphans (the detached holder, CRIU's restored process) so they are reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise DemoFailed(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n", 1)[1].split("\n\nNeeds", 1)[0],
        epilog="Needs root, gcc and the real CRIU.\nexit codes:\n"
        "  0  every step went as described\n  1  a step did not (it says what happened)\n"
        "  2  usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (images, logs)")
    return p


def run(argv: list[str], prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    out = sys.stdout
    if os.geteuid() != 0:
        print(f"{prog}: needs root: CRIU checkpoints and restores processes", file=sys.stderr)
        return exitcodes.ERROR
    from criu_aio_plugin.cli.install_shim import install
    from criu_aio_plugin.criu_locate import find_criu

    criu = find_criu()  # CriuError: main() says what to do
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="criu-aio-demo-"))
    print(
        "criu-aio demo: a process holding Linux AIO rings, checkpointed on this machine,\n"
        f"restored by CRIU alone and through criu-aio.   CRIU: {criu}\n",
        file=out,
    )
    _become_subreaper()
    demo = Demo(work, criu, out)
    ok = False
    try:
        launcher = install(str(work / "bin"), "criu-aio", settings={"criu": criu})
        binary = demo.build()
        before = demo.start(binary)
        images = work / "images"
        demo.dump(images)
        demo.forge(images)
        demo.restore_alone(images)
        demo.restore_with_criu_aio(images, launcher, work / "criu-aio.log")
        demo.verify(before)
        demo.stop()
        demo.refuse(images, launcher, max(r["ring_len"] for r in before["rings"]) // PAGE)
        ok = True
    except DemoFailed as err:
        print(f"\ndemo FAILED at step {demo.step + 1}: {err}", file=out)
    except (OSError, subprocess.TimeoutExpired, CriuAioError) as err:
        print(f"\ndemo FAILED at step {demo.step + 1}: {type(err).__name__}: {err}", file=out)
    finally:
        demo.stop()
        if args.keep or not ok:
            print(f"\nwork folder kept: {work}", file=out)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not ok:
        return exitcodes.ERROR
    print(
        f"\ndemo OK in {time.monotonic() - started:.1f} s: CRIU alone failed on the checkpoint, "
        "criu-aio restored it\nand its rings work; a host where they cannot exist was refused "
        "with the reason. Cleaned up.",
        file=out,
    )
    return exitcodes.OK
