"""The swrk pass-through path, run for real up to the exec: what it imports and sends.

A child Python runs ``criu-aio swrk <fd>`` (cli.main, as the launcher does) on
a real SOCK_SEQPACKET socketpair; ``os.execv`` is replaced by a function that
reports the argv it was given and the modules loaded so far on the socket,
instead of replacing the process. The request must still be queued (CRIU reads
it), and no protobuf may have been imported for anything but RESTORE/CHECK.
"""

from __future__ import annotations

import os

import pytest
from testbed.swrk_child import answer_from_swrk, run_swrk

from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2
from criu_aio_plugin.rpc import wire

PASS_THROUGH = [t for t in sorted(wire.TYPE_NAMES) if t not in (wire.RESTORE, wire.CHECK)]


@pytest.mark.parametrize("req_type", PASS_THROUGH, ids=[wire.TYPE_NAMES[t] for t in PASS_THROUGH])
def test_pass_through_imports_no_protobuf(req_type: int, tmp_path: object) -> None:
    req = rpc_pb2.criu_req(type=req_type, keep_open=True)  # type: ignore[arg-type]
    req.opts.images_dir_fd = 3
    data = req.SerializeToString()
    report = run_swrk(data, tmp_path)
    argv = report["argv"]
    assert isinstance(argv, list) and argv[0] == "/bin/true" and argv[1] == "swrk"
    assert bytes.fromhex(str(report["queued"])) == data  # untouched for CRIU
    modules = set(report["modules"])  # type: ignore[call-overload]
    heavy = {m for m in modules if m.startswith(("google", "criu_aio_plugin._proto"))}
    assert not heavy, f"protobuf imported on the pass-through path: {sorted(heavy)}"
    # nor the slow parts of the standard library (the hand-over budget is 10 ms)
    slow = {"dataclasses", "typing", "logging", "argparse", "re", "pathlib", "socket", "enum"}
    slow |= {"importlib", "warnings", "contextlib", "functools", "collections"}
    assert not slow & modules


def test_pass_through_with_a_config_file_stays_lean(tmp_path: object) -> None:
    """The config file as set-up writes it is read on every swrk: by the lean reader."""
    assert isinstance(tmp_path, os.PathLike)
    conf = os.path.join(tmp_path, "config.toml")
    with open(conf, "w", encoding="utf-8") as f:
        f.write('# set-up\ncriu = "/bin/true"\n# kernel = "live"\nlog = "none"\n')
    data = rpc_pb2.criu_req(type=rpc_pb2.VERSION).SerializeToString()
    report = run_swrk(data, tmp_path, {"CRIU_AIO_CRIU": "", "CRIU_AIO_CONFIG": conf})
    assert report["argv"] == ["/bin/true", "swrk", report["argv"][-1]]  # type: ignore[index]
    assert bytes.fromhex(str(report["queued"])) == data
    modules = set(report["modules"])  # type: ignore[call-overload]
    assert "criu_aio_plugin.config" in modules
    assert not {"tomllib", "re", "typing", "datetime"} & modules


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xff", b"\x12\x00"], ids=["empty", "garbage", "no-type"]
)
def test_unparsable_first_datagram_goes_to_criu_as_is(data: bytes, tmp_path: object) -> None:
    report = run_swrk(data, tmp_path)
    assert bytes.fromhex(str(report["queued"])) == data
    assert not any(str(m).startswith("google") for m in report["modules"])  # type: ignore[attr-defined]


def test_restore_without_rings_hands_over_silently(tmp_path: object) -> None:
    """The RESTORE path (images read, nothing to do) also keeps off stdio and hands over."""
    folder = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
        req.opts.images_dir_fd = folder  # resolved as /proc/<this pid>/fd/N, as CRIU does
        data = req.SerializeToString()
        report = run_swrk(data, tmp_path)
    finally:
        os.close(folder)
    assert bytes.fromhex(str(report["queued"])) == data
    assert report["argv"] == ["/bin/true", "swrk", report["argv"][-1]]  # type: ignore[index]


def test_restore_path_imports_no_protobuf(tmp_path: object) -> None:
    """A RESTORE whose rings are read and judged: the images are read without protobuf."""
    from criu_aio_plugin.images import synthetic

    assert isinstance(tmp_path, os.PathLike)
    rings = synthetic.rings_for([1, 2, 3, 5])
    for pid in (10, 11):
        with open(os.path.join(tmp_path, f"mm-{pid}.img"), "wb") as f:
            f.write(synthetic.mm_image_bytes(rings, 20, pid))
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
        req.opts.images_dir_fd = folder
        data = req.SerializeToString()
        # A simulated kernel judges (no io_setup, never a rewrite in a unit test).
        report = run_swrk(data, tmp_path, {"CRIU_AIO_KERNEL": "sim:cpus=1"})
    finally:
        os.close(folder)
    assert bytes.fromhex(str(report["queued"])) == data
    modules = set(report["modules"])  # type: ignore[call-overload]
    assert "criu_aio_plugin.images.mm" in modules and "criu_aio_plugin.decision.judge" in modules
    heavy = {m for m in modules if m.startswith(("google", "criu_aio_plugin._proto"))}
    assert not heavy, f"protobuf imported on the restore path: {sorted(heavy)}"
    assert not {"tempfile", "shutil", "lzma", "bz2", "platform", "subprocess"} & modules


def test_refusal_is_answered_on_the_socket_only(tmp_path: object) -> None:
    """A CHECK refused on a simulated 64-CPU kernel: the answer goes to the client, not stdio."""
    env = {
        "CRIU_AIO_CRIU": "/bin/false",  # never reached
        "CRIU_AIO_KERNEL": "sim:cpus=64",
        "CRIU_AIO_LOG": "none",
        "PATH": "/usr/bin:/bin",
    }
    answer, code = answer_from_swrk(rpc_pb2.criu_req(type=rpc_pb2.CHECK).SerializeToString(), env)
    resp = rpc_pb2.criu_resp()
    resp.ParseFromString(answer)
    assert resp.type == rpc_pb2.CHECK and not resp.success
    assert "AIO check failed" in resp.cr_errmsg and "64 possible CPUs" in resp.cr_errmsg
    assert code == 1
