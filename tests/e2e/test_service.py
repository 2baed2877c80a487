"""`criu-aio service`: a criu service-style socket in front of the real CRIU.

Clients are Debian's pycriu (use_sk) and raw SEQPACKET sockets. The service
runs as root; an unprivileged client (nobody) gets the AIO work done with its
own rights: a rewrite it could not make itself is refused, images untouched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rpc_helpers import (
    CLIENT,
    as_criu_run,
    criu_aio_script,
    criu_did_not_run,
    forge,
    shared_copy,
    tree_digest,
)
from testbed.harness import Checkpoint, PyCriu, RingSpec, n_for_pages, wait_gone

from criu_aio_plugin import protowire
from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2

pytestmark = [pytest.mark.criu, pytest.mark.e2e]

NOBODY = 65534
WORLD = ("--socket-mode", "0666")  # the tests' clients include uid 65534 (the default is 0600)


def wait_listening(address: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until a connection succeeds (the socket file appears at bind, before listen)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the service exited"
        assert time.monotonic() < deadline, "the service did not start listening"
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
            try:
                probe.connect(address)
                return  # (the probe connection closes at once: a worker sees EOF)
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.01)


def _start_service(tmp_path: Path, criu_bin: str, config: Path | None = None) -> Iterator[str]:
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"criu-aio-svc-{os.getpid()}-{id(tmp_path)}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    address = str(folder / "svc.sock")
    env = {**os.environ, "CRIU_AIO_CRIU": criu_bin, "CRIU_AIO_LOG": str(tmp_path / "svc.log")}
    env.pop("CRIU_AIO_KERNEL", None)
    chosen = ["--config", str(config)] if config is not None else []
    proc = subprocess.Popen(
        [criu_aio_script(), *chosen, "service", "--address", address, "--max-workers", "2", *WORLD],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_listening(address, proc)
    yield address
    proc.terminate()
    proc.wait(10)
    assert not os.path.exists(address), "service left its socket behind"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def service(tmp_path: Path, criu_bin: str) -> Iterator[str]:
    """A running `criu-aio service` on a socket in a world-reachable folder."""
    yield from _start_service(tmp_path, criu_bin)


@pytest.fixture
def big_host_service(tmp_path: Path, criu_bin: str) -> Iterator[str]:
    """The same, judging restores for a 256-CPU host (a config file, `criu-aio --config`)."""
    config = tmp_path / "criu-aio.toml"
    config.write_text('kernel = "sim:cpus=256"\n')
    yield from _start_service(tmp_path, criu_bin, config)


def service_request(
    pycriu: PyCriu, address: str, spec: dict[str, object], user: int | None = None
) -> dict[str, object]:
    """One request through pycriu's use_sk (as root, or as *user* with the system python)."""
    client = CLIENT
    python = pycriu.python
    if user is not None:
        # the root-only pyenv python is out of reach for nobody: use Debian's;
        # and the checkout may be too (a clone under a 0700 folder): a copy
        python = "/usr/bin/python3"
        client = shared_copy(CLIENT)
    proc = subprocess.run(
        [python, "-S", str(client), str(pycriu.path), "sk:" + address, json.dumps(spec)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )
    assert proc.returncode == 0, proc.stderr
    resp: dict[str, object] = json.loads(proc.stdout)
    return resp


def raw_request(address: str, data: bytes) -> rpc_pb2.criu_resp:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sk:
        sk.connect(address)
        sk.send(data)
        resp = rpc_pb2.criu_resp()
        resp.ParseFromString(sk.recv(1 << 16))
        return resp


def restore_spec(images: Path, **opts: object) -> dict[str, object]:
    return {
        "type": "RESTORE",
        "images_dir": str(images),
        "opts": {"log_file": "restore.log", "log_level": 4, **opts},
    }


def test_wrong_nr_req_restored_through_the_service(
    service: str, checkpoint, restore_and_verify, pycriu: PyCriu
) -> None:
    cp: Checkpoint = checkpoint([RingSpec(n_for_pages(2), 1), RingSpec(n_for_pages(3))])
    forge(cp, pycriu)

    def through_service(cp: Checkpoint, pidfile: Path):
        resp = service_request(pycriu, service, restore_spec(cp.images_dir))
        assert resp["success"], resp
        return as_criu_run(resp, cp.images_dir / "restore.log", ("service",))

    restore_and_verify(cp, through_service)


@pytest.mark.parametrize(
    ("opts", "what"),
    [
        ({"rst_sibling": True}, "rst_sibling"),
        ({"inherit_fd": [{"key": "pipe:[1]", "fd": 0}]}, "inherit_fd"),
    ],
)
def test_service_refuses_what_criu_service_refuses(
    service: str, pycriu: PyCriu, tmp_path: Path, opts: dict[str, object], what: str
) -> None:
    resp = service_request(pycriu, service, restore_spec(tmp_path, **opts))
    assert resp["success"] is False
    assert resp["cr_errmsg"] == f"{what} is not allowed in standalone service"


def test_malformed_and_oversized_requests_are_answered(service: str) -> None:
    bad = raw_request(service, b"\xff\xff\xff")
    assert not bad.success and bad.cr_errno == errno.EBADMSG
    assert "malformed request" in bad.cr_errmsg
    big = raw_request(service, b"\x08\x0a" + b"\x1a\x00" * 40_000)
    assert not big.success and "larger than the service's limit" in big.cr_errmsg
    # still serving: a VERSION goes to CRIU, which answers
    version = raw_request(service, rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString())
    assert version.success and version.version.major_number >= 4


def _opts(tmp_path: Path, *fields: bytes) -> bytes:
    body = protowire.varint_field(1, protowire.MASK64)  # images_dir_fd -1
    body += protowire.length_delimited_field(68, str(tmp_path).encode())
    return protowire.length_delimited_field(2, body + b"".join(fields))


SMUGGLED = [
    # issue 11, attack 5: the first opts carries it, a clean second follows
    ("inherit_fd", [protowire.length_delimited_field(27, b"\x0a\x01k\x10\x01")], []),
    ("rst_sibling", [protowire.varint_field(26, 0)], []),
    ("a page server fd", [protowire.length_delimited_field(11, b"\x20\x05")], []),
    # the second opts' ps merges into the first's
    (
        "a page server fd",
        [protowire.length_delimited_field(11, b"\x10\x50")],
        [protowire.length_delimited_field(11, b"\x20\x05")],
    ),
    # a bool of another wire type: unset for protobuf, true for CRIU
    ("malformed request", [protowire.length_delimited_field(26, b"\x01")], []),
]


@pytest.mark.parametrize(("what", "first", "second"), SMUGGLED, ids=[s[0] for s in SMUGGLED])
def test_split_opts_smuggle_nothing_past_the_service(
    service: str, tmp_path: Path, what: str, first: list[bytes], second: list[bytes]
) -> None:
    """Repeated opts merge as CRIU merges them: what either carries is refused."""
    images = tmp_path / "images"
    images.mkdir()
    data = (
        protowire.varint_field(1, rpc_pb2.RESTORE) + _opts(images, *first) + _opts(images, *second)
    )
    resp = raw_request(service, data)
    assert resp.success is False
    assert what in resp.cr_errmsg, resp.cr_errmsg
    # CRIU never ran: the folder holds at most its log, with criu-aio's reason only
    assert set(images.iterdir()) <= {images / "criu.log"}, "CRIU ran"
    assert criu_did_not_run(images / "criu.log"), "CRIU ran"


def _world_readable_copy(cp: Checkpoint) -> Path:
    """The checkpoint in a folder nobody can read but not write (images copied as is)."""
    top = Path(os.environ.get("TMPDIR", "/tmp")) / f"criu-aio-ro-{os.getpid()}-{cp.holder.pid}"
    shutil.rmtree(top, ignore_errors=True)
    shutil.copytree(cp.images_dir, top / "images", symlinks=True)
    for path in [top, *top.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return top / "images"


def test_unprivileged_client_is_refused_a_write_it_could_not_make(
    service: str, checkpoint, pycriu: PyCriu, tmp_path: Path
) -> None:
    cp = checkpoint([RingSpec(n_for_pages(2))])
    forge(cp, pycriu)
    images = _world_readable_copy(cp)
    try:
        before = tree_digest(images)
        resp = service_request(pycriu, service, restore_spec(images), user=NOBODY)
        assert resp["success"] is False
        msg = str(resp["cr_errmsg"])
        assert "rewriting the images failed" in msg and "ermission denied" in msg, msg
        assert resp["cr_errno"] == errno.EACCES
        assert tree_digest(images) == before
        # CRIU never ran, and the reason was not written as root where nobody can't write
        assert not (images / "restore.log").exists()
        assert wait_gone(cp.holder.pids.values()) == []
        # the same folder given to nobody: now the rewrite is the client's to make
        shutil.chown(images, NOBODY, NOBODY)
        for path in images.iterdir():
            shutil.chown(path, NOBODY, NOBODY)
        # (CRIU itself runs as root and restores; only the rewrite was nobody's)
        allowed = service_request(pycriu, service, restore_spec(images), user=NOBODY)
        assert (images / "criu-aio.journal").exists()
        assert allowed["success"], allowed
    finally:
        cp.holder.kill()
        shutil.rmtree(images.parent, ignore_errors=True)


def test_systemd_socket_activation(tmp_path: Path, criu_bin: str, pycriu: PyCriu) -> None:
    """systemd passes the listening socket (LISTEN_FDS=1, fd 3), as a .socket unit does."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    address = str(tmp_path / "activated.sock")
    log = tmp_path / "svc.log"
    proc = subprocess.Popen(
        [
            activate,
            "--seqpacket",
            "-l",
            address,
            "-E",
            f"CRIU_AIO_CRIU={criu_bin}",
            "-E",
            f"CRIU_AIO_LOG={log}",
            criu_aio_script(),
            "service",
            "--address",
            str(tmp_path / "not-used.sock"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(address, proc)
        version = raw_request(address, rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString())
        assert version.success and version.version.major_number >= 4
        refused = service_request(pycriu, address, restore_spec(tmp_path, rst_sibling=True))
        assert refused["cr_errmsg"] == "rst_sibling is not allowed in standalone service"
        assert "socket systemd passed" in log.read_text()
        assert not os.path.exists(tmp_path / "not-used.sock")
    finally:
        proc.terminate()
        proc.wait(10)


FD_REPORTER = """#!/bin/sh
# Stands in for CRIU to show what a service worker hands over: it lists its
# descriptors into $REPORT.
ls -l /proc/self/fd | awk 'NR > 1 {print $9, $11}' | grep -v ' /proc/' > "$REPORT"
exit 0
"""


def test_worker_hands_over_only_the_connection(tmp_path: Path, criu_bin: str) -> None:
    """The exec'd worker holds fds 0-2 and the client's connection: no listener, no log."""
    reporter = tmp_path / "fd-reporter"
    reporter.write_text(FD_REPORTER)
    reporter.chmod(0o755)
    report = tmp_path / "fds.txt"
    address = str(tmp_path / "svc.sock")
    log = tmp_path / "svc.log"
    env = {**os.environ, "CRIU_AIO_CRIU": str(reporter), "CRIU_AIO_LOG": str(log)}
    env["REPORT"] = str(report)
    proc = subprocess.Popen(
        [criu_aio_script(), "service", "--address", address],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        wait_listening(address, proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sk:
            sk.connect(address)
            sk.send(rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString())
            while not report.exists() or not report.read_text():
                assert time.monotonic() < deadline, "the worker never exec'd"
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)
    fds = dict(line.split(" ", 1) for line in report.read_text().splitlines())
    sockets = [fd for fd, target in fds.items() if target.startswith("socket:")]
    assert len(sockets) == 1, f"worker holds {fds}"  # the client's connection only
    assert not any(str(log) in t or "svc.sock" in t for t in fds.values()), fds
    assert set(fds) - set(sockets) <= {"0", "1", "2"}, fds


def test_concurrency_is_bounded(tmp_path: Path, criu_bin: str) -> None:
    """--max-workers 1: an idle connection holds no worker, a served one does.

    A VERSION with keep_open keeps its CRIU worker waiting for the next request
    (CRIU honours keep_open for VERSION): a second client's request waits until
    that connection is done. A client that connects and sends nothing does not
    hold the worker: the loop forks one only once a request is queued.
    """
    address = str(tmp_path / "bounded.sock")
    env = {**os.environ, "CRIU_AIO_CRIU": criu_bin, "CRIU_AIO_LOG": str(tmp_path / "svc.log")}
    proc = subprocess.Popen(
        [criu_aio_script(), "service", "--address", address, "--max-workers", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    version = rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString()
    keep = rpc_pb2.criu_req(type=rpc_pb2.VERSION, keep_open=True).SerializeToString()
    try:
        wait_listening(address, proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as idle:
            idle.connect(address)  # sends nothing: holds a descriptor, not the worker
            assert raw_request(address, version).success
            first = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            first.connect(address)
            first.send(keep)
            first.settimeout(30)
            assert rpc_pb2.criu_resp.FromString(first.recv(1 << 16)).success
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as second:
                second.connect(address)
                second.send(version)
                second.settimeout(1.0)
                with pytest.raises(TimeoutError):
                    second.recv(1 << 16)
                first.close()  # its CRIU worker ends; the second request gets the worker
                second.settimeout(30)
                resp = rpc_pb2.criu_resp.FromString(second.recv(1 << 16))
                assert resp.success and resp.type == rpc_pb2.VERSION
    finally:
        proc.terminate()
        proc.wait(10)


def test_refusal_reason_is_written_as_the_client_where_it_looks(
    big_host_service: str, checkpoint, pycriu: PyCriu
) -> None:
    """The service (root) refuses nobody's restore: the reason goes into nobody's work
    folder as CRIU's log, created with nobody's rights (owned by nobody), images intact."""
    cp = checkpoint([RingSpec(n_for_pages(2))])
    images = _world_readable_copy(cp)
    try:
        shutil.chown(images, NOBODY, NOBODY)  # the client's folder: it may write here
        before = tree_digest(images)
        resp = service_request(pycriu, big_host_service, restore_spec(images), user=NOBODY)
        assert resp["success"] is False and resp["cr_errno"] == errno.ERANGE
        log = images / "restore.log"
        assert log.stat().st_uid == NOBODY and (log.stat().st_mode & 0o777) == 0o600
        text = log.read_text()
        assert str(resp["cr_errmsg"]) in text and "256 possible CPUs" in text
        assert tree_digest(images) == before
    finally:
        shutil.rmtree(images.parent, ignore_errors=True)
