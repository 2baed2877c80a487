"""Host profiles (loading, validation, errors) and per-host placement verdicts.

Profiles here are documents produced by estimator.profile's own
``profile_document`` over simulated kernels; rings are ImageRing values (no
files: placement never reads images).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from criu_aio_plugin import status as st
from criu_aio_plugin.cli import exitcodes
from criu_aio_plugin.errors import ClientError
from criu_aio_plugin.estimator.profile import profile_document
from criu_aio_plugin.fleet import placement, profiles
from criu_aio_plugin.images.mm import ImageRing
from criu_aio_plugin.kernel.arithmetic import criu_formula
from criu_aio_plugin.kernel.simulated import PRESETS, SimulatedKernel, modern, v3_10


def _doc(kernel: SimulatedKernel) -> dict[str, Any]:
    try:
        return profile_document(kernel)
    finally:
        kernel.close()


def _profile(kernel: SimulatedKernel, name: str) -> profiles.HostProfile:
    return profiles.parse(json.dumps(_doc(kernel)), f"{name}.json")


def _rings(*pages: int, page: int = 4096, nr_req: int | None = None) -> list[ImageRing]:
    return [
        ImageRing(
            path="/ckpt/mm-7.img",
            pid=7,
            ring_id=0x7F00_0000_0000 + i * 0x100000,
            nr_req=criu_formula(p * page) if nr_req is None else nr_req,
            ring_len=p * page,
        )
        for i, p in enumerate(pages)
    ]


# -- profiles ---------------------------------------------------------------


def test_profile_round_trip_keeps_name_and_document(tmp_path: Path) -> None:
    doc = _doc(modern(16))
    path = tmp_path / "node-a.json"
    path.write_text(json.dumps(doc))
    loaded = profiles.load(path)
    assert loaded.document == doc
    assert loaded.name == doc["host"]["hostname"]
    assert loaded.source == str(path)


def _broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_doc(modern(2)))
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="something-else"), "not a host profile"),
        (lambda d: d.update(version=2), "version 2 is newer"),
        (lambda d: d.update(version="1"), "field version"),
        (lambda d: d.pop("aio"), "field aio is missing"),
        (lambda d: d["aio"].update(max_nr=-1), "field aio.max_nr is -1"),
        (lambda d: d["host"].update(page_size=0), "field host.page_size is 0"),
        (lambda d: d["ring_sizing"].update(doubling=1), "field ring_sizing.doubling is 1"),
        (lambda d: d["ring_sizing"].update(possible_cpus=True), "ring_sizing.possible_cpus"),
        (lambda d: d["smallest_ring"].update(len=8192), "inconsistent"),
        (lambda d: d["host"].update(page_size=65536), "differs from host.page_size"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(mutate: Any, message: str) -> None:
    with pytest.raises(ClientError, match=message) as err:
        profiles.parse(json.dumps(_broken(mutate)), "hosts/bad.json")
    assert "hosts/bad.json" in str(err.value)


def test_not_json_and_not_object(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="not valid JSON"):
        profiles.parse("{", "x.json")
    with pytest.raises(ClientError, match="JSON object expected"):
        profiles.parse("[1]", "x.json")
    with pytest.raises(ClientError, match="cannot read host profile") as err:
        profiles.load(tmp_path / "missing.json")
    assert err.value.errno == 2


def test_profiles_dir_sorted_and_duplicates_kept_apart(tmp_path: Path) -> None:
    for name, cpus in (("b", 16), ("a", 2), ("c", 2)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_doc(modern(cpus))))
    (tmp_path / "notes.txt").write_text("not a profile")
    loaded = profiles.load_all(directories=[tmp_path])
    assert [Path(p.source).name for p in loaded] == ["a.json", "b.json", "c.json"]
    # a and c describe identical simulated hosts (same hostname): names must differ.
    assert len({p.name for p in loaded}) == 3


def test_empty_profiles_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match=r"no \*\.json host profiles"):
        profiles.load_dir(tmp_path)
    with pytest.raises(ClientError, match="no host profile given"):
        profiles.load_all()


# -- placement --------------------------------------------------------------


def test_verdicts_per_kind_of_host() -> None:
    rings = _rings(1, 3)
    hosts = {
        "small": _profile(modern(2), "small"),
        "mid": _profile(modern(16), "mid"),
        "old": _profile(v3_10(), "old"),
        "arm": _profile(modern(4, page=65536), "arm"),
    }
    got = {name: placement.place(rings, p).status for name, p in hosts.items()}
    assert got == {
        "small": st.FINE,
        "mid": st.IMPOSSIBLE,  # 1-page ring below the 2-page floor of 16 CPUs
        "old": st.REWRITE,  # v3.10: CRIU's nr_req gives half-size rings
        "arm": st.IMPOSSIBLE,  # 4 KiB rings on 64 KiB pages
    }
    mid = placement.place(rings, hosts["mid"])
    assert any("fewer possible CPUs" in r for r in mid.decision.problems)


def test_budget_needed_vs_headroom() -> None:
    rings = _rings(8, 8)
    needed = 2 * criu_formula(8 * 4096)
    roomy = placement.place(rings, _profile(modern(2), "roomy"))
    assert roomy.status is st.FINE
    assert roomy.judgement.budget_needed == needed
    # CRIU's stored values do not fit the headroom, but the smallest nr_req of
    # each ring does: criu-aio rewrites them and the host can take it.
    busy = placement.place(rings, _profile(modern(2).with_budget(65536, 65536 - needed + 1), "b"))
    assert busy.status is st.REWRITE
    assert busy.judgement.headroom == needed - 1
    assert busy.judgement.budget_needed <= busy.judgement.headroom < needed
    # Below even the smallest values, the budget is the verdict.
    small = placement.place(rings, _profile(modern(2).with_budget(needed // 4), "small"))
    assert small.status is st.BUDGET
    assert small.judgement.headroom < small.judgement.budget_needed <= needed
    at_least = f"fs.aio-max-nr to at least {small.judgement.budget_needed}"
    assert any(at_least in r for r in small.decision.problems)


def test_hand_edited_nr_req_needs_criu_aio_everywhere() -> None:
    rings = _rings(2, nr_req=200)  # DESIGN section 1: nr_req 200 on a 2-page ring
    verdict = placement.place(rings, _profile(modern(2), "h"))
    assert verdict.status is st.REWRITE
    assert exitcodes.for_status(verdict.status) == exitcodes.FIXABLE
    (ring,) = verdict.judgement.rings
    assert ring.status is st.REWRITE and ring.nr_req != 200
    assert verdict.decision.rewrites == ((ring.ring.file, ring.ring.ring_id, ring.nr_req),)


def test_fleet_exit_codes_worst_and_any() -> None:
    rings = _rings(3)
    fleet = placement.place_all(
        rings,
        [_profile(modern(2), "a"), _profile(v3_10(), "b"), _profile(modern(64), "c")],
        "/ckpt",
    )
    assert [h.status for h in fleet.hosts] == [st.FINE, st.REWRITE, st.IMPOSSIBLE]
    assert fleet.status() is st.IMPOSSIBLE
    assert fleet.status(any_host=True) is st.FINE
    doc = fleet.to_json()
    assert [h["status"] for h in doc["hosts"]] == ["fine", "rewrite", "impossible"]
    assert [h["verdict"]["decision"] for h in doc["hosts"]] == [
        "fine",
        "rewrite",
        "refuse-impossible",
    ]
    assert len(doc["restorable_hosts"]) == 2
    text = placement.table(fleet)
    assert "CRIU alone" in text and "not at all" in text and "with criu-aio" in text


def test_no_rings_every_host_fine() -> None:
    fleet = placement.place_all([], [_profile(modern(4096), "big")], "/ckpt")
    assert fleet.hosts[0].status is st.FINE
    assert exitcodes.for_status(fleet.status()) == exitcodes.OK


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_profile_loads(preset: str) -> None:
    loaded = _profile(PRESETS[preset](), preset)
    assert loaded.document["schema"] == profiles.SCHEMA
