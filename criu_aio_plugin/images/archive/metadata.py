"""Which container a checkpoint archive holds: its engine's config.dump and spec.dump.

Both are JSON files at the archive's top level, beside ``checkpoint/``
(DESIGN.md 3d). config.dump is the engine's container record: podman writes
its own container configuration, CRI-O and containerd a reduced record with the
same keys (``id``, ``name``, ``rootfsImageName`` / ``rootfsImageRef`` /
``rootfsImage``, ``runtime``, ``createdTime``, ``checkpointedTime``).
spec.dump is the container's OCI runtime spec; its annotations tell the
engine and, under Kubernetes, the pod, namespace and container name:
CRI-O sets ``io.kubernetes.pod.name`` / ``.namespace`` and
``io.kubernetes.container.name``, containerd ``io.kubernetes.cri.sandbox-name``
/ ``-namespace`` and ``io.kubernetes.cri.container-name``; podman sets
``io.container.manager=libpod``.

The metadata only labels what is shown: a missing or unreadable file leaves a
field empty and says why in ``problems``, it never stops the AIO verdict.
"""

from __future__ import annotations

from typing import Any

from criu_aio_plugin import cjson
from criu_aio_plugin.values import Value

CONFIG_DUMP = "config.dump"
SPEC_DUMP = "spec.dump"


class ContainerInfo(Value):
    """The container a checkpoint archive was taken from, as far as its metadata says."""

    name: str = ""
    id: str = ""
    image: str = ""
    runtime: str = ""
    engine: str = ""
    pod: str = ""
    namespace: str = ""
    created: str = ""
    checkpointed: str = ""
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name or None,
            "id": self.id or None,
            "image": self.image or None,
            "runtime": self.runtime or None,
            "engine": self.engine or None,
            "pod": self.pod or None,
            "namespace": self.namespace or None,
            "created": self.created or None,
            "checkpointed": self.checkpointed or None,
        }
        if self.problems:
            doc["problems"] = list(self.problems)
        return doc

    def describe(self) -> str:
        """One line: ``name (image, runtime; pod namespace/pod)``."""
        parts = [p for p in (self.image, self.runtime, self.engine) if p]
        where = f"pod {self.namespace}/{self.pod}" if self.pod else ""
        detail = "; ".join(p for p in (", ".join(parts), where) if p)
        name = self.name or (self.id[:12] if self.id else "(unnamed container)")
        return f"{name} ({detail})" if detail else name


def _load(data: bytes | None, name: str, problems: list[str]) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        doc = cjson.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        problems.append(f"{name}: not JSON ({err})")
        return {}
    if not isinstance(doc, dict):
        problems.append(f"{name}: not a JSON object")
        return {}
    return doc


def _text(doc: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _engine(annotations: dict[str, str], config: dict[str, Any]) -> str:
    if annotations.get("io.container.manager") == "libpod":
        return "podman"
    if any(k.startswith("io.kubernetes.cri-o.") for k in annotations):
        return "cri-o"
    if any(k.startswith("io.kubernetes.cri.") for k in annotations):
        return "containerd"
    if "lockID" in config:  # podman's own container record
        return "podman"
    return ""


def container_info(config_dump: bytes | None, spec_dump: bytes | None) -> ContainerInfo | None:
    """The container named by the archive's metadata; None when it has neither file."""
    if config_dump is None and spec_dump is None:
        return None
    problems: list[str] = []
    config = _load(config_dump, CONFIG_DUMP, problems)
    spec = _load(spec_dump, SPEC_DUMP, problems)
    raw_annotations = spec.get("annotations")
    annotations = (
        {k: v for k, v in raw_annotations.items() if isinstance(v, str)}
        if isinstance(raw_annotations, dict)
        else {}
    )
    name = _text(config, "name") or _text(
        annotations, "io.kubernetes.container.name", "io.kubernetes.cri.container-name"
    )
    return ContainerInfo(
        name=name,
        id=_text(config, "id"),
        image=_text(config, "rootfsImageName", "rootfsImageRef", "rootfsImage", "rootfsImageID")
        or _text(annotations, "io.kubernetes.cri.image-name"),
        runtime=_text(config, "runtime", "OCIRuntime"),
        engine=_engine(annotations, config),
        pod=_text(annotations, "io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"),
        namespace=_text(
            annotations, "io.kubernetes.pod.namespace", "io.kubernetes.cri.sandbox-namespace"
        ),
        created=_text(config, "createdTime"),
        checkpointed=_text(config, "checkpointedTime"),
        problems=tuple(problems),
    )
