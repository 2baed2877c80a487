"""podman 4.3.1 (crun 1.21 or runc 1.1.5) for the engine tests: export archives.

A checkpoint is `podman container checkpoint --export` (uncompressed), forged
in the archive's checkpoint/ folder; each restore is `podman container restore
--import` under a new name, whose images podman unpacks into the container's
userdata/checkpoint (kept after a failed restore, so the test can compare
them). After a failed restore the container stays "created" and crun leaves
its cgroup behind (remove() takes both away).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testbed.engines import (
    IMAGE,
    PODMAN,
    CriuSlot,
    Forged,
    Restore,
    Run,
    Shared,
    children_named,
    engine_env,
    forge_tar,
    pointed_log,
    processes_in_cgroup,
    reap_adopted,
    remove_cgroups,
    run,
)
from testbed.harness import PyCriu, RingSpec, TestbedError


class Podman:
    """podman 4.3.1 through the provisioned wrapper, with crun or runc."""

    def __init__(self, runtime: str, slot: CriuSlot, shared: Shared, tmp: Path) -> None:
        self.runtime, self.slot, self.shared, self.tmp = runtime, slot, shared, tmp
        self.names: list[str] = []
        self.ids: dict[str, str] = {}

    def podman(self, *args: str) -> Run:
        return run([str(PODMAN), *args], engine_env(self.slot.path_env))

    def start_holder(self, name: str, rings: Sequence[RingSpec]) -> None:
        self.names.append(name)
        r = self.podman(
            "run", "-d", "--runtime", self.runtime, "--name", name,
            "-v", f"{self.shared.folder}:/work", IMAGE, *Shared.command(rings),
        )  # fmt: skip
        if not r.ok:
            raise TestbedError(r.describe())
        self._remember(name)

    def _remember(self, name: str) -> None:
        r = self.podman("inspect", "--format", "{{.ID}}", name)
        if r.ok:
            self.ids[name] = r.output.strip()

    def _inspect(self, name: str, fmt: str) -> str:
        r = self.podman("inspect", "--format", fmt, name)
        if not r.ok:
            raise TestbedError(r.describe())
        return r.output.strip()

    def holder_pids(self, name: str) -> list[int]:
        return children_named(int(self._inspect(name, "{{.State.Pid}}")), "holder")

    def state(self, name: str) -> str:
        return self._inspect(name, "{{.State.Status}}")

    def checkpoint(self, name: str, pycriu: PyCriu) -> Forged:
        """Checkpoint *name* (exported, uncompressed), remove it, forge the export."""
        export = self.tmp / f"{name}.tar"
        r = self.podman(
            "container", "checkpoint", "--export", str(export), "--compress", "none", name
        )
        if not r.ok:
            raise TestbedError(r.describe())
        self.remove(name)
        forged = Forged(ref=str(self.tmp / f"{name}-forged.tar"))
        Path(forged.ref).write_bytes(forge_tar(export.read_bytes(), "checkpoint/", pycriu, forged))
        return forged

    def restore(self, forged: Forged, name: str) -> Restore:
        self.names.append(name)
        r = self.podman("container", "restore", "--import", forged.ref, "--name", name)
        self._remember(name)
        images = None
        if name in self.ids:
            images = Path(self._inspect(name, "{{.StaticDir}}")) / "checkpoint"
        return Restore(r, pointed_log(r.output), images if images and images.is_dir() else None)

    def leftovers(self, name: str) -> dict[int, str]:
        """Processes still running in the container's cgroups."""
        cid = self.ids.get(name)
        return processes_in_cgroup(f"libpod-{cid}") if cid else {}

    def remove(self, name: str) -> None:
        self.podman("rm", "-f", "-t", "0", name)
        cid = self.ids.get(name)
        if cid:
            remove_cgroups(f"libpod-{cid}")
        reap_adopted()

    def close(self) -> None:
        for name in self.names:
            self.remove(name)
