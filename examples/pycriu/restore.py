"""Restore a checkpoint through criu-aio with Debian's pycriu (python3-pycriu).

pycriu spawns the binary it is given as `BINARY swrk <fd>`; giving it
criu-aio's launcher is the whole integration.

    sudo criu-aio install-shim --dir /usr/local/lib/criu-aio
    sudo PYTHONPATH=$(cat /opt/criu-aio/pycriu-path) python3 -S \
        examples/pycriu/restore.py /path/to/images [/usr/local/lib/criu-aio/criu]

(PYTHONPATH only because this repository's provisioning keeps pycriu in a
private folder; with the Debian package installed, plain `python3` works.)
Prints the restored root's pid, or criu-aio's / CRIU's reason for failing.
"""

from __future__ import annotations

import os
import sys

import pycriu  # type: ignore[import-not-found]


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    images = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) == 3 else "/usr/local/lib/criu-aio/criu"
    client = pycriu.criu()
    client.use_binary(binary)
    client.opts.images_dir_fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    client.opts.log_file = "restore.log"
    client.opts.log_level = 4
    # restore() raises on failure but drops cr_errmsg; build the request as it does
    req = pycriu.rpc.criu_req(type=pycriu.rpc.RESTORE)
    req.opts.MergeFrom(client.opts)
    resp = client._send_req_and_recv_resp(req)
    if not resp.success:
        print(f"restore failed (errno {resp.cr_errno}): {resp.cr_errmsg}", file=sys.stderr)
        return 1
    print(f"restored, root pid {resp.restore.pid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
