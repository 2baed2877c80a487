"""Run ``criu-aio swrk <fd>`` for real up to its exec, and report what it imported.

A child Python runs ``criu-aio swrk <fd>`` (cli.main, as the launcher does) on
a real SOCK_SEQPACKET socketpair; ``os.execv`` is replaced by a function that
reports the argv it was given and the modules loaded so far on the socket,
instead of replacing the process. Used by the pass-through tests (unit) and the
restore-path import test (live).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

import criu_aio_plugin

CHILD = textwrap.dedent(
    """
    # Only builtins here: the report must not load what it looks for.
    import _socket, os, sys
    sys.path[:0] = [sys.argv[1]]
    fd = int(sys.argv[2])

    def fake_execv(path, argv):
        sock = _socket.socket(fileno=fd)
        # still queued for CRIU? Read it (as CRIU would): closing a socket with
        # unread data makes the peer's recv fail with ECONNRESET.
        queued = sock.recv(65536)
        lines = [" ".join(argv), " ".join(sorted(sys.modules)), queued.hex()]
        sock.send(chr(10).join(lines).encode())
        os._exit(0)

    os.execv = fake_execv
    from criu_aio_plugin.cli.main import main
    raise SystemExit(main(["swrk", str(fd)]))
    """
)


def _python(args: list[str], fd: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """This Python, isolated (-IS), handed socket *fd*; stdio captured (it must stay silent)."""
    return subprocess.Popen(
        [sys.executable, "-IS", *args],
        pass_fds=[fd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_swrk(
    request: bytes, tmp_path: object, extra_env: dict[str, str] | None = None
) -> dict[str, object]:
    client, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    root = os.path.dirname(os.path.dirname(os.path.abspath(criu_aio_plugin.__file__)))
    env = {"CRIU_AIO_CRIU": "/bin/true", "CRIU_AIO_LOG": "none", "PATH": "/usr/bin:/bin"}
    env.update(extra_env or {})
    try:
        client.send(request)
        proc = _python(["-c", CHILD, root, str(theirs.fileno())], theirs.fileno(), env)
        theirs.close()
        try:
            raw = client.recv(1 << 20)
        except ConnectionResetError:
            raw = b""
        if not raw:
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"swrk sent no report (exit {proc.returncode}): {err.decode()}")
        argv, modules, queued = raw.decode().split("\n")
        report: dict[str, object] = {
            "argv": argv.split(),
            "modules": modules.split(),
            "queued": queued,
        }
        out, err = proc.communicate(timeout=30)
    finally:
        client.close()
    assert proc.returncode == 0, err
    assert out == b"" and err == b"", "swrk wrote to stdout/stderr"
    return report


def answer_from_swrk(request: bytes, env: dict[str, str]) -> tuple[bytes, int]:
    """Run the real ``criu-aio swrk <fd>`` (no fake exec) on *request* with exactly *env*;
    return the answer it sent and its exit code. Its stdout and stderr must stay empty."""
    client, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    root = os.path.dirname(os.path.dirname(os.path.abspath(criu_aio_plugin.__file__)))
    code = f"import sys; sys.path[:0] = [{root!r}]; from criu_aio_plugin.cli.main import main; "
    code += f"raise SystemExit(main(['swrk', '{theirs.fileno()}']))"
    try:
        client.send(request)
        proc = _python(["-c", code], theirs.fileno(), env)
        theirs.close()
        answer = client.recv(1 << 16)
        out, err = proc.communicate(timeout=60)
    finally:
        client.close()
    assert (out, err) == (b"", b""), "swrk wrote to stdio"
    return answer, proc.returncode
