"""The restore decision: one model of "a checkpoint judged on a kernel", one pure decision.

Every entry point that asks "can this checkpoint restore here, and with which
nr_req?" goes through this package: the swrk RESTORE and the service, ``criu-aio
restore``, ``fix``, ``inspect``, ``check --images-dir`` and ``can-restore``.

- ``model``: the values: ``RingVerdict`` (one ring: status, chosen nr_req,
  reason) and ``Judgement`` (every ring, the AIO budget need vs headroom,
  the kernel and host facts);
- ``judge``: runs the estimator over a checkpoint's rings on a kernel and
  builds the ``Judgement`` (the only place with probes in it);
- ``decide``: the pure function ``Judgement -> Decision`` (fine, rewrite,
  refuse-impossible, refuse-budget, error; its message, errno and the
  rewrites), and the one rule for when the rewrites are written;
- ``checkpoint``: judges an images directory and carries a decision out
  (reads and rewrites under the directory's lock).

Presenters (tables, JSON, criu_resp, exit codes) live in the layers above.
Imported lazily by name: ``criu-aio swrk`` pays only for what it uses.
"""
