"""A refused swrk request: the reason reaches cr_errmsg, criu-aio's log and CRIU's log file.

``criu_log.place`` is the pure part (cr-service.c's resolution of the work
directory and log file name); the rest runs ``criu-aio swrk <fd>`` for real in
a child on a SOCK_SEQPACKET socketpair, with a simulated kernel (it refuses,
never rewrites) or without any CRIU.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.swrk_child import answer_from_swrk

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.criu_options import IMAGES_DIR, LOG_FILE, WORK_DIR
from criu_aio_plugin.images import synthetic
from criu_aio_plugin.rpc.criu_log import LogPlace, place
from criu_aio_plugin.rpc.wire import RpcRequest


@pytest.mark.parametrize(
    ("req", "criu_conf", "rpc_conf", "expected"),
    [
        (RpcRequest(2, True, images_dir_fd=5), {}, {}, LogPlace("/proc/42/fd/5", "criu.log")),
        (
            RpcRequest(2, True, images_dir_fd=5, work_dir_fd=6, log_file="restore.log"),
            {},
            {},
            LogPlace("/proc/42/fd/6", "restore.log"),
        ),
        (RpcRequest(2, True, images_dir="/ckpt"), {}, {}, LogPlace("/ckpt", "criu.log")),
        (RpcRequest(2, True, images_dir_fd=5, log_file="a/b.log"), {}, {}, None),  # CRIU refuses
        (RpcRequest(2, True, images_dir_fd=5, log_to_stderr=True), {}, {}, None),
        (RpcRequest(2, True), {}, {}, None),  # no images: CRIU answers without a log
        (
            RpcRequest(2, True, images_dir_fd=5),
            {WORK_DIR: "/w", LOG_FILE: "x.log"},  # /etc/criu/default.conf
            {},
            LogPlace("/w", "x.log"),
        ),
        (
            RpcRequest(2, True, images_dir_fd=5, work_dir_fd=6, log_file="r.log"),
            {WORK_DIR: "/w"},
            {},
            LogPlace("/proc/42/fd/6", "r.log"),  # the request beats CRIU's config files
        ),
        (
            RpcRequest(2, True, images_dir_fd=5, work_dir_fd=6, log_file="r.log"),
            {},
            {IMAGES_DIR: "/i", LOG_FILE: "c.log"},  # the RPC config file beats the request
            LogPlace("/proc/42/fd/6", "c.log"),
        ),
        (
            RpcRequest(2, True, images_dir_fd=5),
            {},
            {IMAGES_DIR: "/i"},
            LogPlace("/i", "criu.log"),
        ),
    ],
)
def test_where_criu_logs_a_request(
    req: RpcRequest,
    criu_conf: dict[str, str],
    rpc_conf: dict[str, str],
    expected: LogPlace | None,
) -> None:
    assert place(req, 42, criu_conf, rpc_conf) == expected


def _images(folder: Path, pages: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rings = synthetic.rings_for(pages)
    (folder / "mm-10.img").write_bytes(synthetic.mm_image_bytes(rings, 20, 10))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _swrk(req: rpc_pb2.criu_req, env: dict[str, str]) -> tuple[rpc_pb2.criu_resp, int]:
    """Run `criu-aio swrk <fd>` in a child (stdio must stay silent); its answer and exit code."""
    answer, code = answer_from_swrk(
        req.SerializeToString(), {"PATH": "/nonexistent", "CRIU_AIO_CONFIG": "none", **env}
    )
    resp = rpc_pb2.criu_resp()
    resp.ParseFromString(answer)
    return resp, code


def _restore_req(images: int, work: int | None, log_file: str | None) -> rpc_pb2.criu_req:
    req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
    req.opts.images_dir_fd = images
    if work is not None:
        req.opts.work_dir_fd = work
    if log_file is not None:
        req.opts.log_file = log_file
    return req


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path, int, int]]:
    images, work = tmp_path / "ckpt", tmp_path / "work"
    _images(images, [1, 2])
    work.mkdir()
    fds = (os.open(images, os.O_RDONLY | os.O_DIRECTORY), os.open(work, os.O_RDONLY))
    yield images, work, *fds
    for fd in fds:
        os.close(fd)


def test_without_criu_nothing_is_touched_and_the_reason_is_in_criu_log(
    dirs: tuple[Path, Path, int, int], tmp_path: Path
) -> None:
    images, work, images_fd, work_fd = dirs
    before = _digests(images)
    log = tmp_path / "criu-aio.log"
    resp, code = _swrk(_restore_req(images_fd, work_fd, "restore.log"), {"CRIU_AIO_LOG": str(log)})
    assert not resp.success and code == 1
    assert resp.cr_errno == errno.ENOENT
    assert "cannot hand over to CRIU: no real CRIU found" in resp.cr_errmsg
    assert _digests(images) == before  # not even a journal: CRIU was looked for first
    text = (work / "restore.log").read_text()
    assert "Error (criu-aio): criu-aio: cannot hand over to CRIU: no real CRIU found" in text
    assert f"criu-aio's own log: {log}" in text
    (line,) = [ln for ln in log.read_text().splitlines() if " warning: " in ln]  # one line
    assert "[reason also in CRIU's log /proc/" in line and "/restore.log]" in line


def test_refusal_reason_lands_in_the_work_dir_log(dirs: tuple[Path, Path, int, int]) -> None:
    images, work, images_fd, work_fd = dirs
    before = _digests(images)
    env = {"CRIU_AIO_CRIU": "/bin/true", "CRIU_AIO_KERNEL": "sim:cpus=256", "CRIU_AIO_LOG": "none"}
    resp, code = _swrk(_restore_req(images_fd, work_fd, "restore.log"), env)
    assert not resp.success and resp.cr_errno == errno.ERANGE and code == 4
    text = (work / "restore.log").read_text()
    assert "cannot exist on this host" in text and "256 possible CPUs" in text
    assert resp.cr_errmsg in text
    assert _digests(images) == before


def test_without_work_dir_the_default_log_is_in_the_images_dir(
    dirs: tuple[Path, Path, int, int],
) -> None:
    images, _, images_fd, _ = dirs
    env = {"CRIU_AIO_CRIU": "/bin/true", "CRIU_AIO_KERNEL": "sim:cpus=256", "CRIU_AIO_LOG": "none"}
    resp, _ = _swrk(_restore_req(images_fd, None, None), env)
    assert not resp.success
    assert "cannot exist on this host" in (images / "criu.log").read_text()


def test_a_symlinked_log_file_is_not_followed(
    dirs: tuple[Path, Path, int, int], tmp_path: Path
) -> None:
    _, work, images_fd, work_fd = dirs
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (work / "restore.log").symlink_to(victim)
    log = tmp_path / "criu-aio.log"
    env = {
        "CRIU_AIO_CRIU": "/bin/true",
        "CRIU_AIO_KERNEL": "sim:cpus=256",
        "CRIU_AIO_LOG": str(log),
    }
    resp, _ = _swrk(_restore_req(images_fd, work_fd, "restore.log"), env)
    assert not resp.success and "cannot exist on this host" in resp.cr_errmsg
    assert victim.read_text() == "precious\n"
    (line,) = [ln for ln in log.read_text().splitlines() if " warning: " in ln]
    assert "[CRIU's log not written: " in line and "Too many levels of symbolic links" in line


def test_the_request_config_file_moves_the_log_as_criu_does(tmp_path: Path) -> None:
    from criu_aio_plugin.rpc.criu_log import Told, criu_config, tell

    work = tmp_path / "elsewhere"
    work.mkdir()
    conf = tmp_path / "runc.conf"
    conf.write_text(f"work-dir {work}\nlog-file from-config.log\n")
    req = RpcRequest(
        2, True, images_dir=str(tmp_path), log_file="restore.log", config_file=str(conf)
    )
    assert criu_config(environ={}, read=lambda _: None) == {}
    assert tell(req, os.getpid(), ["the reason"], {}) == Told(path=str(work / "from-config.log"))
    assert "Error (criu-aio): the reason" in (work / "from-config.log").read_text()
    # a FIFO as config file: CRIU would block on it; we read nothing and write nothing
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    req = RpcRequest(2, True, images_dir=str(tmp_path), config_file=str(fifo))
    assert tell(req, os.getpid(), ["x"], {}) == Told(path=str(tmp_path / "criu.log"))
    # CRIU's own config files setting nonsense: CRIU would not start, nothing is written
    assert criu_config(environ={}, read=lambda _: "no-such-option\n") is None
