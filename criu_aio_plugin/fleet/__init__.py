"""Placement across a fleet: which hosts can restore a checkpoint.

- ``profiles``: load and validate host profile documents (``criu-aio profile --json``).
- ``placement``: a checkpoint's rings x a host profile -> per-host verdict.
- ``k8s``: Node Feature Discovery labels and the nodeAffinity admitting exactly
  the nodes that can restore a checkpoint.
"""
