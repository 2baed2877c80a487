"""examples/kubernetes stays true: the committed Pod is what the generator prints."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import yaml
from kubernetes.client import ApiClient, V1Pod

from criu_aio_plugin.fleet import k8s
from criu_aio_plugin.kernel.arithmetic import RingArithmetic

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_pod", EXAMPLE / "gen_pod.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_pod_matches_generator() -> None:
    committed = yaml.safe_load((EXAMPLE / "restored-pod.yaml").read_text())
    assert committed == _generator().pod()


def test_committed_pod_deserializes_and_places() -> None:
    committed = yaml.safe_load((EXAMPLE / "restored-pod.yaml").read_text())
    model = ApiClient().deserialize(json.dumps(committed), "V1Pod", "application/json")
    assert isinstance(model, V1Pod)
    affinity = committed["spec"]["affinity"]["nodeAffinity"]
    admitted = {
        cpus
        for cpus in (1, 2, 16, 47, 48, 64, 88)
        if k8s.affinity_admits(
            affinity,
            k8s.nfd_labels(
                k8s.node_facts_from_arithmetic(RingArithmetic(possible_cpus=cpus), aio_max_nr=65536)
            ),
        )
    }
    assert admitted == {1, 2, 16, 47}


def test_sample_feature_file_parses() -> None:
    lines = (EXAMPLE / "features.d" / "criu-aio").read_text().splitlines()
    labels = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    facts = k8s.parse_nfd_labels(labels)
    assert facts.min_ring_len <= 3 * 4096  # the sample node can take the sample Pod
    assert k8s.affinity_admits(_generator().pod()["spec"]["affinity"]["nodeAffinity"], labels)
