"""A pycriu client of `criu-aio service` (or of `criu service`: the same protocol).

    sudo PYTHONPATH=$(cat /opt/criu-aio/pycriu-path) python3 -S \
        examples/service/client.py /run/criu-aio.socket /path/to/images

Sends a RESTORE for the images (as this user: criu-aio rewrites images only
where you could write yourself) and prints the answer.
"""

from __future__ import annotations

import os
import sys

import pycriu  # type: ignore[import-not-found]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    client = pycriu.criu()
    client.use_sk(sys.argv[1])
    req = pycriu.rpc.criu_req(type=pycriu.rpc.RESTORE)
    req.opts.images_dir_fd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
    req.opts.log_file = "restore.log"
    resp = client._send_req_and_recv_resp(req)
    if not resp.success:
        print(f"restore failed (errno {resp.cr_errno}): {resp.cr_errmsg}", file=sys.stderr)
        return 1
    print(f"restored, root pid {resp.restore.pid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
