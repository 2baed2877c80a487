"""The service's admission bookkeeping (pure: no sockets, a fake clock).

What the accept loop may do with connections and workers: per-uid and
service-wide limits, round robin over uids, deadlines.
"""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from criu_aio_plugin.rpc.admission import Admission, Limits, Peer

ALICE, BOB, ROOT = Peer(100, 1000), Peer(200, 2000), Peer(1, 0)


def _admission(**limits: float) -> Admission:
    return Admission(Limits(**limits))  # type: ignore[arg-type]


def test_per_uid_connection_limit_refuses_only_that_uid() -> None:
    adm = _admission(max_connections_per_uid=2)
    assert adm.accept(1, ALICE, 0.0) is None
    assert adm.accept(2, ALICE, 0.0) is None
    refusal = adm.accept(3, ALICE, 0.0)
    assert refusal is not None and refusal.errno == errno.EUSERS
    assert "uid 1000 already holds 2 connections" in refusal.message
    assert refusal.message.startswith("criu-aio service: ")
    assert refusal.log_line.startswith("refused pid 100 uid 1000: ")
    assert "\n" not in refusal.log_line
    assert adm.accept(3, BOB, 0.0) is None
    for key in range(10, 20):  # root: only the service-wide limit
        assert adm.accept(key, ROOT, 0.0) is None


def test_service_wide_connection_limit() -> None:
    adm = _admission(max_connections=3, max_connections_per_uid=3)
    for key, peer in enumerate((ALICE, BOB, ROOT)):
        assert adm.accept(key, peer, 0.0) is None
    refusal = adm.accept(9, ROOT, 0.0)
    assert refusal is not None and refusal.errno == errno.EAGAIN


def test_only_ready_connections_get_workers_round_robin() -> None:
    adm = _admission(max_workers=3, max_workers_per_uid=2)
    for key in (1, 2, 3):
        adm.accept(key, ALICE, 0.0)
    adm.accept(4, BOB, 0.0)
    assert adm.next_ready() is None  # nothing has sent a request
    for key in (1, 2, 3, 4):
        adm.readable(key, 1.0)
    order = []
    for pid in (501, 502, 503):
        conn = adm.next_ready()
        assert conn is not None
        order.append(conn.peer.uid)
        adm.started(conn.key, pid, 1.0)
    # alice, bob, alice: bob is not starved behind alice's queue
    assert order == [1000, 2000, 1000]
    assert adm.next_ready() is None  # three workers: the service-wide limit
    adm.exited(502)  # bob's: a slot is free, but alice is at her two workers
    assert adm.next_ready() is None
    assert adm.working(1000) == 2 and adm.held(1000) == 3  # two workers + one queued
    adm.exited(501)
    conn = adm.next_ready()
    assert conn is not None and conn.key == 3


def test_per_uid_worker_limit_leaves_room_for_others() -> None:
    adm = _admission(max_workers=4, max_workers_per_uid=1)
    for key in range(1, 9):
        adm.accept(key, ALICE, 0.0)
        adm.readable(key, 0.0)
    conn = adm.next_ready()
    assert conn is not None
    adm.started(conn.key, 700, 0.0)
    assert adm.next_ready() is None  # alice's seven others wait
    adm.accept(20, BOB, 0.0)
    adm.readable(20, 0.0)
    bob = adm.next_ready()
    assert bob is not None and bob.peer == BOB


def test_root_is_held_only_to_the_service_wide_worker_limit() -> None:
    adm = _admission(max_workers=3, max_workers_per_uid=1)
    for key in range(1, 5):
        adm.accept(key, ROOT, 0.0)
        adm.readable(key, 0.0)
    for pid in (1, 2, 3):
        conn = adm.next_ready()
        assert conn is not None
        adm.started(conn.key, pid, 0.0)
    assert adm.next_ready() is None


def test_idle_and_queued_connections_expire() -> None:
    adm = _admission(request_timeout=10.0, queue_timeout=30.0, max_workers=1)
    adm.accept(1, ALICE, 0.0)  # idle
    adm.accept(2, BOB, 0.0)
    adm.readable(2, 1.0)  # queued (no worker: see below)
    adm.accept(3, BOB, 0.0)
    adm.readable(3, 1.0)
    conn = adm.next_ready()
    assert conn is not None and conn.key == 2
    adm.started(2, 77, 1.0)
    assert adm.next_deadline() == 10.0
    assert adm.expired(9.9) == []
    idle = adm.expired(10.0)
    assert [(r.key, r.errno, r.verb) for r in idle] == [(1, errno.ETIMEDOUT, "closed idle")]
    assert "no request within 10 s" in idle[0].message
    adm.drop(1)
    assert adm.next_deadline() == 31.0
    queued = adm.expired(31.0)
    assert [(r.key, r.errno) for r in queued] == [(3, errno.EBUSY)]


def test_workers_past_their_deadline_are_overdue_until_they_exec() -> None:
    adm = _admission(work_timeout=60.0, kill_grace=5.0)
    for key, pid in ((1, 11), (2, 12)):
        adm.accept(key, ALICE, 0.0)
        adm.readable(key, 0.0)
        adm.started(key, pid, 0.0)
    adm.exec_seen(12)  # now CRIU: no deadline of ours
    assert adm.next_deadline() == 65.0
    assert adm.overdue(64.9) == []
    assert [w.pid for w in adm.overdue(65.0)] == [11]
    adm.workers[11].killed = True
    assert adm.overdue(100.0) == [] and adm.next_deadline() is None
    assert adm.held(1000) == 2  # a killed worker counts until it is reaped
    adm.exited(11)
    adm.exited(12)
    assert adm.held(1000) == 0 and adm.total_held == 0


# One operation of a random run: (what, peer index, key/pid index).
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["accept", "readable", "dispatch", "exit", "drop", "exec"]),
        st.integers(0, 3),
        st.integers(0, 11),
    ),
    max_size=80,
)
_PEERS = (ALICE, BOB, ROOT, Peer(300, 3000))


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_counts_and_limits_hold_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    lim = Limits(max_workers=3, max_workers_per_uid=2, max_connections=8, max_connections_per_uid=3)
    adm = Admission(lim)
    next_pid = 1000
    for what, who, index in ops:
        peer = _PEERS[who]
        if what == "accept" and index not in adm.conns:
            adm.accept(index, peer, 0.0)
        elif what == "readable" and index in adm.conns:
            adm.readable(index, 0.0)
        elif what == "drop" and index in adm.conns:
            adm.drop(index)
        elif what == "dispatch":
            conn = adm.next_ready()
            if conn is not None:
                assert conn.ready_since is not None
                next_pid += 1
                adm.started(conn.key, next_pid, 0.0)
        elif what == "exit" and adm.workers:
            adm.exited(sorted(adm.workers)[index % len(adm.workers)])
        elif what == "exec" and adm.workers:
            adm.exec_seen(sorted(adm.workers)[index % len(adm.workers)])
        # the invariants
        assert len(adm.workers) <= lim.max_workers
        assert adm.total_held <= lim.max_connections
        for uid in {p.uid for p in _PEERS}:
            conns = sum(1 for c in adm.conns.values() if c.peer.uid == uid)
            workers = sum(1 for w in adm.workers.values() if w.peer.uid == uid)
            assert adm.held(uid) == conns + workers
            assert adm.working(uid) == workers
            if uid != 0:
                assert adm.held(uid) <= lim.max_connections_per_uid
                assert workers <= lim.max_workers_per_uid


# -- what a non-root client may not ask of the root CRIU (service_policy) ---------


def _req(**opts: object) -> bytes:
    from criu_aio_plugin._proto import criu_aio_rpc_pb2 as rpc_pb2

    req = rpc_pb2.criu_req(type=rpc_pb2.RESTORE)
    req.opts.images_dir_fd = -1
    for key, value in opts.items():
        if key == "exec_cmd":
            req.opts.exec_cmd.extend(value)  # type: ignore[arg-type]
        else:
            setattr(req.opts, key, value)
    return req.SerializeToString()


def test_config_file_and_exec_cmd_only_for_root() -> None:
    from criu_aio_plugin.rpc import service_policy

    for data, what in (
        (_req(config_file="/tmp/c.conf"), "config_file"),
        (_req(exec_cmd=["/bin/sh", "-c", "id"]), "exec_cmd"),
    ):
        answer = service_policy.screen(data, 65534)
        assert answer is not None and answer.errno == errno.EPERM
        assert what in answer.why and "uid 65534" in answer.why
        assert service_policy.screen(data, 0) is None
    assert service_policy.screen(_req(images_dir="/x"), 65534) is None


def test_policy_sees_an_option_in_any_opts_occurrence() -> None:
    """protobuf merges repeated opts: a config_file in the first one counts."""
    from criu_aio_plugin.rpc import service_policy

    first = _req(config_file="/tmp/c.conf")
    clean = _req(images_dir="/x")
    split = first + clean[clean.index(b"\x12") :]  # a second opts field, appended
    answer = service_policy.screen(split, 1000)
    assert answer is not None and "config_file" in answer.why
    malformed = service_policy.screen(b"\xff\xff", 1000)
    assert malformed is not None and malformed.errno == errno.EBADMSG
