"""The RPC interposer: criu-aio standing between a CRIU client and the real CRIU.

How it works. A client that spawns ``criu swrk <fd>`` (runc, pycriu, libcriu,
go-criu) or connects to ``criu service`` sends one criu_req per SOCK_SEQPACKET
datagram. criu-aio reads the first request without consuming it (MSG_PEEK), and:

- RESTORE: finds the images the request names, asks the estimator which nr_req
  reproduces every AIO ring on this kernel, rewrites the mm images when needed,
  then ``execv``s the real CRIU on the same socket, which reads the very request
  the client sent; or, when no nr_req can help (a ring below this host's
  smallest ring, the fs.aio-max-nr budget, a failed rewrite), consumes the
  request and answers it with criu_resp{success=false, cr_errmsg=why}.
- CHECK: runs the AIO check; answers a failure itself, else hands over.
- anything else: hands over at once, without importing protobuf.

Because CRIU replaces our process image (same pid, same fds, same parent),
everything it derives from the spawning client stays right: SO_PEERCRED, the
restored tree being the client's child (rst_sibling), the client's wait(),
notify callbacks and inherited descriptors.

Modules: ``wire`` (criu_req and criu_resp on the wire, without protobuf,
whose import costs more than a whole pass-through may take; its values are
``criu_aio_plugin.values``, frozen without dataclasses for the same reason),
``protocol`` (pure decisions), ``transport`` (socket and exec),
``images_access`` (find and open the images as the peer), ``peer_files``
(paths a client names, read with its rights and without blocking), ``pids``
(keep the checkpoint's pids free), ``aio_work`` (estimate + rewrite, the
check), ``log`` (file or syslog), ``crash`` (a traceback as one log line),
``swrk`` and ``service`` (the loops; their command lines are
``criu_aio_plugin.cli.swrk`` and ``cli.service``). The service is built for
hostile local clients: ``service_loop`` (an accept loop no client can block),
``admission`` (its pure bookkeeping: per-uid limits, deadlines),
``service_worker`` (one connection, under a deadline) and ``service_policy``
(what only root may ask of the root CRIU).
"""
