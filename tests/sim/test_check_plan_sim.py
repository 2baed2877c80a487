"""The AIO check, judgements, host profiles and --kernel specs on simulated kernels."""

from __future__ import annotations

import json
import time

import pytest

from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.cli.check import run as check_run
from criu_aio_plugin.cli.profile import run as profile_run
from criu_aio_plugin.decision.decide import decide
from criu_aio_plugin.decision.judge import judge
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.estimator.check import run_aio_check
from criu_aio_plugin.estimator.profile import kernel_from_profile, profile_document
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.select import kernel_from_spec
from criu_aio_plugin.kernel.simulated import PRESETS, SimulatedKernel
from criu_aio_plugin.status import BUDGET, FINE, IMPOSSIBLE, REWRITE


def test_check_fails_on_v3_10_naming_sizes() -> None:
    report = run_aio_check(kernel_from_spec("sim:v3.10"))
    assert not report.ok
    assert report.max_pages == 129
    # Without doubling, CRIU's nr_req for P pages maps about P/2 pages: right
    # only while that still rounds up to P (1 and 2 pages).
    assert report.pages_of(FINE) == [1, 2]
    assert report.pages_of(REWRITE) == list(range(3, 130))
    assert report.failure is not None and "3-129 pages" in report.failure
    for size in report.sizes:
        if size.status is REWRITE:
            assert size.criu_ring_len < size.ring_len


def test_check_fails_on_64_cpus_naming_impossible_sizes() -> None:
    report = run_aio_check(kernel_from_spec("sim:cpus=64"))
    assert report.pages_of(IMPOSSIBLE) == [1, 2, 3, 4]
    assert report.pages_of(FINE) == list(range(5, 130))
    assert report.smallest_ring_len == 5 * 4096
    assert "1-4 pages" in report.summary and "smallest ring here: 5 pages" in report.summary


@pytest.mark.parametrize("spec", ["sim:x86-1", "sim:x86-2", "sim:arm64-64k"])
def test_check_passes_where_the_formula_holds(spec: str) -> None:
    report = run_aio_check(kernel_from_spec(spec))
    assert report.ok and report.failure is None
    assert len(report.sizes) == report.max_pages
    # the default covers at least 8192 requested events
    assert criu_formula(report.max_pages * report.page_size) >= 8192


def test_check_cli_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_run(["--aio-only", "--kernel", "sim:x86-2"], "t") == exitcodes.OK
    assert check_run(["--aio-only", "--kernel", "sim:v3.10"], "t") == exitcodes.FIXABLE
    capsys.readouterr()
    code = check_run(["--aio-only", "--json", "--kernel", "sim:cpus=64", "--max-pages", "8"], "t")
    assert code == exitcodes.IMPOSSIBLE
    doc = json.loads(capsys.readouterr().out)
    assert doc["aio"]["statuses"]["impossible"] == "1-4"
    assert doc["aio"]["statuses"]["fine"] == "5-8"
    assert doc["exit_code"] == exitcodes.IMPOSSIBLE


def _rings(*specs: tuple[int, int]) -> list[ImageRing]:
    return [
        ImageRing(f"/ckpt/mm-{100 + i}.img", 100 + i, 0x7F0000000000 + i * 0x10000, nr, length)
        for i, (nr, length) in enumerate(specs)
    ]


def test_judgement_statuses() -> None:
    rings = _rings((62, 4096), (190, 3 * 4096), (999, 3 * 4096))
    kernel = kernel_from_spec("sim:x86-2")
    assert isinstance(kernel, SimulatedKernel)
    fine = judge(kernel, rings)
    assert [r.status for r in fine.rings] == [FINE, FINE, REWRITE]
    new = fine.rewrites[("mm-102.img", rings[2].ring_id)]
    assert len(fine.rewrites) == 1
    assert kernel.arithmetic.ring_len(new) == 3 * 4096 != kernel.arithmetic.ring_len(999)
    assert fine.budget_needed == 62 + 190 + new
    old = judge(kernel_from_spec("sim:v3.10"), rings)
    assert [r.status for r in old.rings] == [FINE, REWRITE, REWRITE]
    big = judge(kernel_from_spec("sim:cpus=64"), rings)
    assert big.status is IMPOSSIBLE
    message = decide(big).message
    assert "mm-100.img" in message and f"{rings[0].ring_id:#x}" in message
    assert "64 possible CPUs" in message


def test_judgement_budget() -> None:
    rings = _rings((6398, 100 * 4096), (6398, 100 * 4096))
    kernel = kernel_from_spec("sim:cpus=2,aio_max_nr=10000")
    judged = judge(kernel, rings)
    assert [r.status for r in judged.rings] == [FINE, FINE]
    assert judged.budget_needed == 2 * 6398 and judged.over_budget
    assert judged.status is BUDGET
    message = decide(judged).message
    assert "fs.aio-max-nr=10000" in message and "12796" in message


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_profile_rebuilds_the_kernel(preset: str) -> None:
    original = kernel_from_spec(f"sim:{preset}")
    assert isinstance(original, SimulatedKernel)
    doc = json.loads(json.dumps(profile_document(original)))
    assert doc["schema"] == "criu-aio/host-profile" and doc["version"] == 1
    rebuilt = kernel_from_profile(doc)
    page = original.arithmetic.page_size
    for pages in range(1, 300):
        n = criu_formula(pages * page)
        assert rebuilt.probe(n).ring_len == original.probe(n).ring_len
    assert rebuilt.probe(1).ring_len == doc["smallest_ring"]["len"]


def test_profile_rejects_other_documents() -> None:
    with pytest.raises(ClientError):
        kernel_from_profile({"schema": "something-else"})
    doc = profile_document(kernel_from_spec("sim:x86-64"))
    doc["smallest_ring"]["len"] = 4096
    with pytest.raises(ClientError, match="inconsistent"):
        kernel_from_profile(doc)


def test_profile_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert profile_run(["--kernel", "sim:x86-88"], "t") == exitcodes.OK
    text = capsys.readouterr().out
    assert "88" in text and "24576 bytes (6 page(s)" in text
    assert profile_run(["--json", "--kernel", "sim:v3.10"], "t") == exitcodes.OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["ring_sizing"]["doubling"] is False


@pytest.mark.parametrize(
    ("spec", "cpus", "doubling", "floor", "page"),
    [
        ("sim:cpus=64,doubling=0,floor_per_cpu=4,page=65536", 64, False, 4, 65536),
        ("sim:v3.10", 2, False, 0, 4096),
        ("sim:x86-4096", 4096, True, 4, 4096),
        ("sim:v3.10,page=16384", 2, False, 0, 16384),
        ("sim:", 1, True, 4, 4096),
    ],
)
def test_spec_parsing(spec: str, cpus: int, doubling: bool, floor: int, page: int) -> None:
    k = kernel_from_spec(spec)
    assert isinstance(k, SimulatedKernel) and not k.is_live
    a = k.arithmetic
    assert (a.possible_cpus, a.doubling, a.floor_per_cpu, a.page_size) == (
        cpus,
        doubling,
        floor,
        page,
    )
    assert isinstance(kernel_from_spec(k.name), SimulatedKernel)


@pytest.mark.parametrize(
    "spec",
    ["bogus", "sim:nope", "sim:cpus=x", "sim:colour=3", "sim:page=3000", "sim:cpus=0"],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ClientError):
        kernel_from_spec(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "sim:cpus=" + "9" * 30000,  # issue 11: killed a service worker
        "sim:cpus=0x" + "f" * 30000,  # int() reads any length in base 16
        "sim:cpus=2000000",
        "sim:page=0x80000000",
        "sim:aio_max_nr=" + str(1 << 64),
        "sim:header=1e9",
    ],
)
def test_numbers_are_bounded(spec: str) -> None:
    start = time.monotonic()
    with pytest.raises(ClientError) as info:
        kernel_from_spec(spec)
    assert time.monotonic() - start < 0.5
    assert len(str(info.value)) < 200  # the message does not carry the 30,000 digits


def test_spec_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIU_AIO_KERNEL", "sim:cpus=16")
    k = kernel_from_spec()
    assert isinstance(k, SimulatedKernel) and k.arithmetic.possible_cpus == 16


def test_judgement_shrinks_stored_values_to_fit_a_tight_budget() -> None:
    # Two 2-page rings as CRIU stores them (126 each) need 252 events; the
    # smallest nr_req giving a 2-page ring on a 2-CPU host is 63, so 126 fit.
    rings = _rings((126, 2 * 4096), (126, 2 * 4096))
    kernel = kernel_from_spec("sim:cpus=2,aio_max_nr=200")
    assert isinstance(kernel, SimulatedKernel)
    judged = judge(kernel, rings)
    assert not judged.over_budget and judged.status is REWRITE
    assert [r.status for r in judged.rings] == [REWRITE, REWRITE]
    for r in judged.rings:
        assert kernel.arithmetic.ring_len(r.nr_req) == 2 * 4096
        assert kernel.arithmetic.ring_len(r.nr_req - 1) < 2 * 4096
    assert judged.budget_needed == 2 * judged.rings[0].nr_req <= 200
    # With room to spare the stored values stay as they are.
    roomy = judge(kernel_from_spec("sim:cpus=2"), rings)
    assert [r.status for r in roomy.rings] == [FINE, FINE]


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("sim:x86-2", "right for 1-129 pages (of 1-129 pages)"),
        ("sim:v3.10", "right for 1-2 pages; wrong for 3-129 (criu-aio converges)"),
        ("sim:cpus=64", "right for 5-129 pages; 1-4 pages cannot exist here"),
    ],
)
def test_profile_text_says_where_the_formula_is_right(
    spec: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # v3.10: right for the first sizes, wrong afterwards (not "right from N up").
    assert profile_run(["--kernel", spec], "t") == exitcodes.OK
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "CRIU's formula" in ln)
    assert text in line
