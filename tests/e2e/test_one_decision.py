"""One decision, seven entry points: every way of asking criu-aio answers alike.

For each case of the corpus (decision_corpus.CASES: real checkpoints dumped
here and synthetic ones, on the live kernel and simulated ones, with AIO
budgets that fit, fit only after shrinking, and do not fit), the library's
decision (``Session.examine``) is the reference, and each entry point must show
the same action and status, the same status and nr_req for every ring, the
exit code (or cr_errno) the one table gives, and the same message:

- ``criu-aio inspect DIR --json``;
- ``criu-aio check DIR --json`` (CRIU's own check included);
- ``criu-aio can-restore DIR --profile P --json``, P from ``criu-aio profile
  --json --kernel SPEC``;
- ``criu-aio fix --dry-run -D DIR --json``;
- ``criu-aio restore -D DIR ...`` (the CLI wrap; ``$CRIU_AIO_KERNEL`` selects
  the kernel), on a copy of the checkpoint;
- an RPC RESTORE through ``criu-aio swrk`` (a socketpair client, images_dir_fd),
  on another copy.

The two restore paths hand over to a recording stand-in for CRIU, which notes
its argv, the request it was handed and the mm images in place then; their
decision is read from their debug log (every ring's status and nr_req) and from
the answer. A live-kernel case of a real checkpoint is then restored by the real
CRIU (through ``criu-aio restore``) from the images the swrk path left, and the
restored rings are verified, so the corpus is anchored in what CRIU does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from decision_corpus import (
    BUDGET,
    CASES,
    CHECKPOINTS,
    EXPECTED_ERRNO,
    LIVE,
    REWRITE,
    Case,
    RealSpec,
    Seen,
    comparable_message,
    expected_code,
    from_outcome,
    from_restore_path,
    from_verdict,
    rings_from_log,
    stand_in_records,
    write_stand_in,
)
from rpc_helpers import criu_aio_script, forge_image
from rpc_raw_client import call
from testbed.harness import (
    PAGE,
    Checkpoint,
    Criu,
    Holder,
    PyCriu,
    RingSpec,
    check_fresh,
    kill_pids,
    n_for_pages,
    possible_cpus,
    start_holder,
)

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.decision.checkpoint import Outcome, Session
from criu_aio_plugin.decision.decide import REPORT
from criu_aio_plugin.images.mm import read_rings
from criu_aio_plugin.kernel.select import kernel_from_spec
from criu_aio_plugin.rpc.protocol import REFUSED

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

_STATUS_OF_CODE = {4: "impossible", 5: "budget", 1: "error"}
_STATUS_OF_ERRNO = {v: k for k, v in EXPECTED_ERRNO.items() if v}


# --- the corpus: checkpoints built once per module, on first use ---------------------


class Corpus:
    def __init__(self, root: Path, criu: Criu, pycriu: PyCriu) -> None:
        self.root = root
        self.criu = criu
        self.pycriu = pycriu
        self.dirs: dict[str, Path] = {}
        self.real: dict[str, Checkpoint] = {}
        self.holders: list[Holder] = []
        self.profiles: dict[str, Path] = {}
        self.stand_in = write_stand_in(root / "stand-in-criu", sys.executable)

    def images(self, name: str) -> Path:
        if name not in self.dirs:
            spec = CHECKPOINTS[name]
            if isinstance(spec, RealSpec):
                self.dirs[name] = self._dump(name, spec)
            else:
                spec.write(self.root / name)
                self.dirs[name] = self.root / name
        return self.dirs[name]

    def _dump(self, name: str, spec: RealSpec) -> Path:
        pending = spec.pending or (0,) * len(spec.pages)
        rings = [RingSpec(n_for_pages(p), e) for p, e in zip(spec.pages, pending, strict=True)]
        h = start_holder(self.root / f"{name}-holder", rings, children=spec.children)
        self.holders.append(h)  # killed at teardown, whatever happens next
        before = h.reports()
        check_fresh(before, rings)
        cp = Checkpoint(self.root / name, h, before, h.dump(self.criu, self.root / name))
        if not cp.dump.ok:
            pytest.fail(f"criu dump failed: {cp.dump.describe()}", pytrace=False)
        self.real[name] = cp
        if spec.forged:
            for proc in before:
                forge_image(self.pycriu, cp.mm_image(proc))
        return cp.images_dir

    def profile(self, spec: str) -> Path:
        if spec not in self.profiles:
            done = cli("profile", "--json", "--kernel", spec)
            assert done.returncode == 0, done.stderr
            path = self.root / f"profile-{len(self.profiles)}.json"
            path.write_text(done.stdout)
            self.profiles[spec] = path
        return self.profiles[spec]

    def close(self) -> list[int]:
        left: list[int] = []
        for h in self.holders:
            left += kill_pids(h.pids.values(), str(h.binary))
        return left


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, criu: Criu, pycriu: PyCriu
) -> Iterator[Corpus]:
    c = Corpus(tmp_path_factory.mktemp("corpus"), criu, pycriu)
    yield c
    assert c.close() == [], "holder processes survived the corpus"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each entry point gets the kernel, log and CRIU from this test only.
    for key in list(os.environ):
        if key.startswith("CRIU_AIO_") or key.startswith("STANDIN_"):
            monkeypatch.delenv(key)
    bindir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [criu_aio_script(), *args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kernel_args(spec: str) -> list[str]:
    return [] if spec == LIVE else ["--kernel", spec]


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(".log")
    }


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.log"))
    return dst


# --- the entry points -----------------------------------------------------------------


def reference(images: Path, spec: str) -> Outcome:
    kernel = kernel_from_spec(spec)
    try:
        with Session(images, write=False) as cp:
            return cp.examine(kernel, intent=REPORT)
    finally:
        kernel.close()


def _json(entry: str, done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout, f"{entry}: no output (exit {done.returncode}): {done.stderr}"
    return json.loads(done.stdout)


def inspect(images: Path, spec: str) -> Seen:
    done = cli("inspect", str(images), "--json", *kernel_args(spec))
    return from_verdict("inspect", _json("inspect", done), done.returncode)


def check(images: Path, spec: str, criu_bin: str) -> Seen:
    done = cli("check", str(images), "--json", *kernel_args(spec), env={"CRIU_AIO_CRIU": criu_bin})
    doc = _json("check", done)
    seen = from_verdict("check", doc["checkpoint"], done.returncode)
    if doc.get("exit_code") != done.returncode:
        seen.notes.append(f"JSON exit_code {doc.get('exit_code')} != {done.returncode}")
    if not doc.get("criu", {}).get("ok"):
        seen.notes.append(f"CRIU's own check failed: {doc.get('criu')}")
    return seen


def can_restore(images: Path, profile: Path) -> Seen:
    done = cli("can-restore", str(images), "--profile", str(profile), "--json")
    doc = _json("can-restore", done)
    (host,) = doc["hosts"]
    seen = from_verdict("can-restore", host["verdict"], done.returncode)
    seen.message = None  # names the profile's host, not the kernel spec
    if host["exit_code"] != done.returncode or doc["exit_code"] != done.returncode:
        seen.notes.append(f"JSON exit codes {host['exit_code']}/{doc['exit_code']}")
    return seen


def fix_dry_run(images: Path, spec: str) -> Seen:
    done = cli("fix", "--dry-run", "-D", str(images), "--json", *kernel_args(spec))
    doc = _json("fix --dry-run", done)
    seen = from_verdict("fix --dry-run", doc, done.returncode)
    fix = doc["fix"]
    changes = {(c["file"], int(c["ring"], 16)): c["new_nr_req"] for c in fix["changes"]}
    rewrites = {k: nr for k, (s, _, nr) in seen.rings.items() if s == "rewrite"}
    if changes != rewrites:
        seen.notes.append(f"fix.changes {changes} != the rewrite rings {rewrites}")
    if fix["written"]:
        seen.notes.append(f"a dry run says it wrote {fix['files']}")
    return seen


def _restore_env(kernel: str, log: Path, record: Path, images: Path, criu: str) -> dict[str, str]:
    env = {
        "CRIU_AIO_CRIU": criu,
        "CRIU_AIO_LOG": str(log),
        "CRIU_AIO_LOG_LEVEL": "debug",
        "STANDIN_RECORD": str(record),
        "STANDIN_IMAGES": str(images),
    }
    if kernel != LIVE:
        env["CRIU_AIO_KERNEL"] = kernel
    return env


def _handed_over(seen: Seen, records: list[dict[str, Any]], copy: Path, argv: list[str]) -> None:
    if len(records) != 1:
        seen.notes.append(f"CRIU started {len(records)} times")
        return
    if records[0]["argv"][: len(argv)] != argv:
        seen.notes.append(f"CRIU got argv {records[0]['argv']}, not {argv}")
    if records[0]["images"] != {k: v for k, v in digests(copy).items() if k.startswith("mm-")}:
        seen.notes.append("the mm images changed after CRIU was handed them")


def wrap_restore(images: Path, spec: str, work: Path, stand_in: str) -> tuple[Seen, Path]:
    copy = copy_of(images, work / "wrap")
    log, record = work / "wrap.log", work / "wrap.record"
    args = ["-D", str(copy), "-d", "--pidfile", str(work / "wrap.pid"), "-o", "restore.log"]
    done = cli("restore", *args, env=_restore_env(spec, log, record, copy, stand_in))
    text = log.read_text() if log.exists() else ""
    records = stand_in_records(record)
    if records:
        seen = from_restore_path("restore", text, None, done.returncode)
        _handed_over(seen, records, copy, ["restore", *args])
    else:
        status = _STATUS_OF_CODE.get(done.returncode, f"exit {done.returncode}")
        message = done.stderr.strip()
        seen = from_restore_path("restore", text, status, done.returncode, message=message)
    seen.notes += [f"log: {line}" for line in text.splitlines() if " error: " in line]
    return seen, copy


def swrk_restore(images: Path, spec: str, work: Path, stand_in: str) -> tuple[Seen, Path]:
    copy = copy_of(images, work / "swrk")
    log, record = work / "swrk.log", work / "swrk.record"
    dir_fd = os.open(copy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        req = rpc_pb2.criu_req(
            type=rpc_pb2.RESTORE,
            opts=rpc_pb2.criu_opts(images_dir_fd=dir_fd, log_file="restore.log", log_level=4),
        )
        env = _restore_env(spec, log, record, copy, stand_in)
        ex = call(criu_aio_script(), req, pass_fds=[dir_fd], env=env)
    finally:
        os.close(dir_fd)
    text = log.read_text() if log.exists() else ""
    records = stand_in_records(record)
    code = ex.swrk_status if ex.swrk_status is not None else -1
    if ex.resp.success:
        seen = from_restore_path("swrk", text, None, code, cr_errno=0)
        _handed_over(seen, records, copy, ["swrk"])
        if records and records[0]["request"] != req.SerializeToString().hex():
            seen.notes.append("CRIU was handed another request than the client sent")
    else:
        err = ex.resp.cr_errno
        status = _STATUS_OF_ERRNO.get(err, f"errno {err}")
        seen = from_restore_path(
            "swrk", text, status, code, cr_errno=err, message=ex.resp.cr_errmsg
        )
        if records:
            seen.notes.append("refused, yet CRIU was started")
        if ex.resp.type != rpc_pb2.RESTORE:
            seen.notes.append(f"answer of type {ex.resp.type}")
    seen.notes += [f"log: {line}" for line in text.splitlines() if " error: " in line]
    return seen, copy


# --- comparing ----------------------------------------------------------------------


def disagreements(ref: Seen, seen: Seen, has_rings: bool) -> list[str]:
    out = [f"{seen.entry}: {note}" for note in seen.notes]
    if (seen.action, seen.status) != (ref.action, ref.status):
        out.append(f"{seen.entry}: {seen.action}/{seen.status}, library {ref.action}/{ref.status}")
    if seen.rings != ref.rings and (has_rings or seen.entry not in ("restore", "swrk")):
        for key in sorted(set(seen.rings) | set(ref.rings)):
            if seen.rings.get(key) != ref.rings.get(key):
                out.append(
                    f"{seen.entry}: {key[0]} ring {key[1]:#x}: (status, stored, nr_req) "
                    f"{seen.rings.get(key)}, library {ref.rings.get(key)}"
                )
    want = expected_code(seen.entry, ref.status)
    if seen.code != want:
        out.append(f"{seen.entry}: exit code {seen.code}, the table says {want}")
    if seen.entry == "swrk" and seen.cr_errno != EXPECTED_ERRNO[ref.status]:
        out.append(f"swrk: cr_errno {seen.cr_errno}, want {EXPECTED_ERRNO[ref.status]}")
    if seen.message is not None and ref.message is not None:
        want_msg = ref.message
        if seen.entry in ("restore", "swrk"):
            want_msg = REFUSED + ref.message
        if comparable_message(seen.message) != comparable_message(want_msg):
            out.append(f"{seen.entry}: message {seen.message!r}, library {want_msg!r}")
    return out


def _restore_path_images(
    seen: Seen, copy: Path, original: Path, ref: Outcome, spec: str
) -> list[str]:
    """What the restore path left: rewritten exactly as decided (live), else untouched."""
    d = ref.decision
    if spec == LIVE and d.action == REWRITE:
        now = {(r.file, r.ring_id): r.nr_req for r in read_rings(copy)}
        want = {
            (r.ring.file, r.ring.ring_id): r.nr_req if r.status.name == "rewrite" else r.ring.nr_req
            for r in ref.judgement.rings
        }
        return [] if now == want else [f"{seen.entry}: images hold nr_req {now}, decided {want}"]
    before = digests(original)
    after = {k: v for k, v in digests(copy).items() if k in before}
    return [] if after == before else [f"{seen.entry}: images changed without a live rewrite"]


# --- the test -----------------------------------------------------------------------


def _check_case_shape(case: Case, ref: Outcome) -> None:
    """The case is what the table says it is (so the corpus covers what it claims)."""
    d, j = ref.decision, ref.judgement
    if case.action is not None:
        assert d.action == case.action, f"{case.id}: decided {d.action}: {d.message}"
    stored = sum(r.ring.nr_req for r in j.rings)
    if case.budget == "fits":
        assert not j.over_budget and j.budget_needed == stored
    elif case.budget == "shrinks":
        shrunk = [r for r in j.rings if r.status.name == "rewrite" and r.nr_req < r.ring.nr_req]
        assert shrunk and j.budget_needed <= j.headroom < stored, (j.budget_needed, j.headroom)
    elif case.budget == "over":
        assert d.action == BUDGET and (
            j.over_budget or any(r.status.name == "budget" for r in j.rings)
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_entry_point_reaches_the_same_decision(
    case: Case,
    corpus: Corpus,
    tmp_path: Path,
    criu_bin: str,
    restore_and_verify: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = corpus.images(case.checkpoint)
    before = digests(images)
    ref_outcome = reference(images, case.kernel)
    ref = from_outcome("library", ref_outcome)
    _check_case_shape(case, ref_outcome)
    problems: list[str] = []
    if case.kernel == LIVE:
        # The live kernel must decide as the simulated kernel of its own shape.
        twin = f"sim:cpus={possible_cpus()},page={PAGE}"
        other = from_outcome(twin, reference(images, twin))
        if other.decision() != ref.decision():
            problems.append(f"live decides {ref.decision()}, its twin {twin} {other.decision()}")

    # The entry points run side by side (each in its own process, the restore
    # paths on their own copies): less wall time on two cores.
    profile = corpus.profile(case.kernel)
    with ThreadPoolExecutor(max_workers=3) as pool:
        reports = [
            pool.submit(inspect, images, case.kernel),
            pool.submit(check, images, case.kernel, criu_bin),
            pool.submit(can_restore, images, profile),
            pool.submit(fix_dry_run, images, case.kernel),
        ]
        wrap_job = pool.submit(wrap_restore, images, case.kernel, tmp_path, corpus.stand_in)
        swrk_job = pool.submit(swrk_restore, images, case.kernel, tmp_path, corpus.stand_in)
        seen = [job.result() for job in reports]
        (wrap, wrap_copy), (swrk, swrk_copy) = wrap_job.result(), swrk_job.result()
    if digests(images) != before:
        problems.append("a report command changed the images")
    seen += [wrap, swrk]
    has_rings = bool(ref.rings)
    for s in seen:
        problems += disagreements(ref, s, has_rings)
    problems += _restore_path_images(wrap, wrap_copy, images, ref_outcome, case.kernel)
    problems += _restore_path_images(swrk, swrk_copy, images, ref_outcome, case.kernel)
    if not has_rings:
        for s in (wrap, swrk):
            log = (tmp_path / f"{'wrap' if s is wrap else 'swrk'}.log").read_text()
            if "no AIO rings in the checkpoint" not in log:
                problems.append(f"{s.entry}: did not hand over for a checkpoint without rings")
    table = "\n".join(
        f"  {s.entry:14} {s.action:18} {s.status:10} exit {s.code} errno {s.cr_errno}"
        for s in [ref, *seen]
    )
    assert not problems, f"{case.id}: entry points disagree\n{table}\n" + "\n".join(problems)

    if case.kernel == LIVE and case.real and not ref_outcome.decision.refused:
        # Anchor: the real CRIU restores the images the swrk path handed over
        # (rewritten when they needed it), through `criu-aio restore`, which
        # now finds every ring fine.
        cp = corpus.real[case.checkpoint]
        wrap_log = swrk_copy / "criu-aio.log"
        monkeypatch.setenv("CRIU_AIO_CRIU", criu_bin)
        monkeypatch.setenv("CRIU_AIO_LOG", str(wrap_log))
        monkeypatch.setenv("CRIU_AIO_LOG_LEVEL", "debug")
        through_criu_aio = Criu(criu_aio_script())  # `criu-aio restore -D DIR -d ...`
        try:
            restore_and_verify(
                replace(cp, images_dir=swrk_copy),
                lambda c, pidfile: through_criu_aio.restore(c.images_dir, pidfile),
            )
            statuses = {status for status, _, _ in rings_from_log(wrap_log.read_text()).values()}
            assert statuses == {"fine"}, f"after the swrk path's rewrite: {statuses}"
        finally:
            cp.holder.kill()
