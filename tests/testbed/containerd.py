"""containerd 1.6 + ctr for the engine tests: checkpoints in the content store.

ContainerdDaemon is a private daemon (own root, state, socket, TMPDIR). A
checkpoint is `ctr containers checkpoint --task --rw`, an image whose index
names a criu tar blob; the forged copy is a new index with a forged blob,
imported as an OCI layout with --no-unpack (ctr 1.6 cannot export checkpoint
images). Each restore is `ctr containers restore --live --rw` under a new name;
containerd unpacks the criu tar into $TMPDIR/ctrd-checkpoint* and leaves it
there, which lets the test compare the images criu-aio saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.engines import (
    ENGINE_TIMEOUT,
    IMAGE,
    OCI_ARCHIVE,
    SYSTEM_PATH,
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


class ContainerdDaemon:
    """A private containerd 1.6 (own root, state, socket) started with the slot's PATH.

    Its shims inherit the daemon's environment (containerd-shim-runc-v2 puts
    /opt/containerd/bin first) and run runc, which starts `criu` from that PATH.
    """

    def __init__(self, folder: Path, slot: CriuSlot) -> None:
        self.folder = folder
        self.slot = slot
        self.state = Path(f"/run/criu-aio/test-containerd-{os.getpid()}")
        self.address = str(self.state / "containerd.sock")
        self.tmp = folder / "tmp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.toml"
        # The CRI plugin is not wanted here (it wants CNI and a sandbox image).
        config.write_text(
            "version = 2\n"
            f'root = "{self.folder / "root"}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
        )
        # containerd 1.6 unpacks a checkpoint's criu tar into $TMPDIR/ctrd-checkpoint*
        # for the restore and leaves it there: keep those in the test's folder.
        self.tmp.mkdir(exist_ok=True)
        log = (self.folder / "containerd.log").open("wb")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            env={**engine_env(self.slot.path_env), "TMPDIR": str(self.tmp)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_file = self.folder / "containerd.log"
                raise TestbedError(f"containerd did not start; see {log_file}")
            time.sleep(0.05)
        r = self.ctr("images", "import", "--base-name", IMAGE.rsplit(":", 1)[0], str(OCI_ARCHIVE))
        if not r.ok:
            raise TestbedError(r.describe())

    def ctr(self, *args: str, timeout: float = ENGINE_TIMEOUT) -> Run:
        return run(["ctr", "--address", self.address, *args], engine_env(SYSTEM_PATH), timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        # Shims outlive the daemon; containers were removed before, so they exit.
        for pid_dir in (self.state / "io.containerd.runtime.v2.task").glob("*/*"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((pid_dir / "shim.pid").read_text()), signal.SIGKILL)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-R", str(self.state)], capture_output=True, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        reap_adopted()


class Containerd:
    """containerd 1.6 + ctr: checkpoints are images in the content store."""

    def __init__(self, daemon: ContainerdDaemon, shared: Shared, tmp: Path) -> None:
        self.daemon, self.shared, self.tmp = daemon, shared, tmp
        self.names: list[str] = []

    def ctr(self, *args: str, timeout: float = ENGINE_TIMEOUT) -> Run:
        return self.daemon.ctr(*args, timeout=timeout)

    def start_holder(self, name: str, rings: Sequence[RingSpec]) -> None:
        self.names.append(name)
        mount = f"type=bind,src={self.shared.folder},dst=/work,options=rbind:rw"
        r = self.ctr("run", "-d", "--mount", mount, IMAGE, name, *Shared.command(rings))
        if not r.ok:
            raise TestbedError(r.describe())

    def _task_pid(self, name: str) -> int:
        for line in self.ctr("tasks", "ls").output.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == name:
                return int(fields[1])
        raise TestbedError(f"containerd has no task {name}")

    def holder_pids(self, name: str) -> list[int]:
        return children_named(self._task_pid(name), "holder")

    def state(self, name: str) -> str:
        for line in self.ctr("tasks", "ls").output.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == name:
                return fields[2].lower()
        return "none"

    def checkpoint(self, name: str, pycriu: PyCriu) -> Forged:
        """`ctr c checkpoint --task --rw`, remove the container, forge a copy of the image.

        The copy is made through the content store: the criu tar blob forged,
        a new index naming it, imported as an OCI layout (--no-unpack).
        """
        ref = f"localhost/criu-aio/checkpoint-{name}:dumped"
        r = self.ctr("containers", "checkpoint", "--task", "--rw", name, ref)
        if not r.ok:
            raise TestbedError(r.describe())
        self.remove(name)
        forged = Forged(ref=f"localhost/criu-aio/checkpoint-{name}:forged")
        index_digest = self._image_digest(ref)
        index = json.loads(self._blob(index_digest))
        blobs = {}
        for m in index["manifests"]:
            data = self._blob(m["digest"])
            if m["mediaType"].endswith(".criu.tar"):
                data = forge_tar(data, "", pycriu, forged)
                m["digest"], m["size"] = _digest(data), len(data)
            blobs[m["digest"]] = data
        raw = json.dumps(index).encode()
        blobs[_digest(raw)] = raw
        top = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": _digest(raw),
                    "size": len(raw),
                    "annotations": {"org.opencontainers.image.ref.name": forged.ref},
                }
            ],
        }
        layout = self.tmp / f"{name}-forged.oci.tar"
        with tarfile.open(layout, "w") as t:
            entries = {
                "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                "index.json": json.dumps(top).encode(),
            }
            entries |= {f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()}
            for path, data in entries.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        r = self.ctr("images", "import", "--no-unpack", str(layout))
        if not r.ok:
            raise TestbedError(r.describe())
        return forged

    def _image_digest(self, ref: str) -> str:
        for line in self.ctr("images", "ls").output.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise TestbedError(f"containerd has no image {ref}")

    def _blob(self, digest: str) -> bytes:
        proc = subprocess.run(
            ["ctr", "--address", self.daemon.address, "content", "get", digest],
            capture_output=True,
            timeout=ENGINE_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise TestbedError(f"ctr content get {digest}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def criu_blob_intact(self, forged: Forged) -> bool:
        """The forged checkpoint's criu tar in the content store still has its digest."""
        index = json.loads(self._blob(self._image_digest(forged.ref)))
        for m in index["manifests"]:
            if m["mediaType"].endswith(".criu.tar"):
                return bool(_digest(self._blob(m["digest"])) == m["digest"])
        return False

    def restore(self, forged: Forged, name: str) -> Restore:
        self.names.append(name)
        unpacked = set(self.daemon.tmp.glob("ctrd-checkpoint*"))
        r = self.ctr("containers", "restore", "--live", "--rw", name, forged.ref)
        # The folder containerd unpacked the criu tar into (images_dir_fd).
        new = sorted(set(self.daemon.tmp.glob("ctrd-checkpoint*")) - unpacked)
        return Restore(r, pointed_log(r.output), new[0] if len(new) == 1 else None)

    def leftovers(self, name: str) -> dict[int, str]:
        return processes_in_cgroup(name)

    def remove(self, name: str) -> None:
        if self.state(name) == "running":
            self.ctr("tasks", "kill", "-s", "KILL", name)
            deadline = time.monotonic() + 10
            while self.state(name) == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
        # Not `delete -f`: on the CREATED task a failed restore leaves (no process)
        # it waits forever for an exit that never comes (containerd 1.6.20).
        self.ctr("tasks", "delete", name, timeout=30)
        self.ctr("containers", "rm", name, timeout=30)
        remove_cgroups(name)
        reap_adopted([self.daemon.proc.pid] if self.daemon.proc else [])

    def close(self) -> None:
        for name in self.names:
            self.remove(name)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
