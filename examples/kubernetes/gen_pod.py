"""Regenerate restored-pod.yaml's nodeAffinity (python examples/kubernetes/gen_pod.py).

tests/unit/test_k8s_example.py checks the committed file against this.
"""

from __future__ import annotations

import sys
from typing import Any

from criu_aio_plugin.fleet import k8s

RING_LENS = [3 * 4096, 8 * 4096]  # the checkpoint's rings: 3 and 8 pages of 4 KiB

HEAD = """\
# A Pod to be restored from a checkpoint holding two AIO rings, 3 and 8 pages
# of 4 KiB (the 3-page ring is criu#1156's: no node with 48 or more possible
# CPUs can rebuild it). The nodeAffinity is what
#   criu-aio inspect /var/lib/checkpoints/db --k8s-affinity
# printed for that checkpoint: it admits exactly the nodes whose criu-aio.io
# labels (written by `criu-aio profile --nfd`, see README.md) say they can.
# Regenerate: python examples/kubernetes/gen_pod.py > examples/kubernetes/restored-pod.yaml
"""


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "restored-db",
            "annotations": {"criu-aio.io/checkpoint": "/var/lib/checkpoints/db"},
        },
        "spec": {
            "affinity": {"nodeAffinity": k8s.node_affinity(RING_LENS)},
            "containers": [{"name": "db", "image": "registry.example/db:1.4"}],
        },
    }


def main() -> None:
    import yaml

    sys.stdout.write(HEAD + yaml.safe_dump(pod(), sort_keys=False))


if __name__ == "__main__":
    main()
