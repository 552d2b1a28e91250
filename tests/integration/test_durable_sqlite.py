"""``runguard serve --store sqlite:///…`` killed with SIGKILL and restarted on the same file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.integration.support import begin_request, end_request
from tests.stubs import Stub, sync_stub


def _kill(server: Served) -> None:
    server.process.kill()
    server.process.wait(10)


def _current(stub: Stub, guard: str) -> pb.CurrentResponse:
    return stub.Current(pb.CurrentRequest(guard=guard))


def _watch(stub: Stub, request: pb.WatchRequest, count: int) -> list[pb.WatchResponse]:
    """The first ``count`` messages of a Watch other than Progress heartbeats."""
    stream = stub.Watch(request, timeout=15)
    got: list[pb.WatchResponse] = []
    try:
        for message in stream:
            if message.WhichOneof("event") != "progress":
                got.append(message)
            if len(got) == count:
                break
    finally:
        stream.cancel()
    return got


def test_holders_leases_dedup_fencing_and_revisions_survive_a_kill(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    """After kill -9 and a restart on the same file, state is as it was, and a lease that ran
    out while the server was down expires at once, at its stored deadline."""
    url = f"sqlite://{tmp_path / 'state' / 'runguard.db'}"
    first = served("--store", url, "--dedup-window", "60")
    with grpc.insecure_channel(first.address) as channel:
        stub = sync_stub(channel)
        held = stub.Begin(begin_request("held", {"n": 1}, guard="job")).granted
        short = stub.Begin(begin_request("short", {"n": 2}, guard="lease", ttl=1.0)).granted
        snapshot = _watch(stub, pb.WatchRequest(guards=["job", "lease"]), 1)[0]
        seen, epoch = snapshot.snapshot.revision, snapshot.epoch
        # Missed by the watcher: an End and a new grant.
        assert stub.End(end_request(held)).result == pb.END_RESULT_ENDED
        later = stub.Begin(begin_request("later", {"n": 3}, guard="job")).granted
        before = _current(stub, "job")
    assert later.run.fencing_token > held.run.fencing_token
    _kill(first)
    time.sleep(max(0.0, short.run.expires_at.ToSeconds() + 0.3 - time.time()))

    second = served("--store", url, "--dedup-window", "60")
    with grpc.insecure_channel(second.address) as channel:
        stub = sync_stub(channel)
        after = _current(stub, "job")
        assert after.epoch == before.epoch == epoch
        assert after.revision >= before.revision
        assert [r.operation_id for r in after.state.holders] == ["later"]
        assert after.state.holders[0] == later.run
        # The watcher resumes with its revision and epoch: exactly what it missed.
        missed = _watch(
            stub, pb.WatchRequest(guards=["job", "lease"], after_revision=seen, epoch=epoch), 3
        )
        assert [m.WhichOneof("event") for m in missed] == ["change"] * 3
        changes = [m.change for m in missed]
        assert [(c.run.operation_id, c.kind, c.release_reason) for c in changes] == [
            ("held", pb.CHANGE_KIND_RELEASED, pb.RELEASE_REASON_ENDED),
            ("later", pb.CHANGE_KIND_ACQUIRED, pb.RELEASE_REASON_UNSPECIFIED),
            ("short", pb.CHANGE_KIND_RELEASED, pb.RELEASE_REASON_EXPIRED),
        ]
        revisions = [c.revision for c in changes]
        assert revisions == sorted(set(revisions))
        assert revisions[0] > seen
        assert changes[2].run.expires_at == short.run.expires_at
        assert not _current(stub, "lease").state.holders
        # The dedup entry of the expired run is still there.
        again = stub.Begin(begin_request("short-again", {"n": 2}, guard="lease")).rejected
        assert again.reason == pb.REJECTION_REASON_DUPLICATE
        assert again.duplicate_of.operation_id == "short"
        # The lease token still ends its run; fencing goes on above every earlier token.
        assert stub.End(end_request(later)).result == pb.END_RESULT_ENDED
        newest = stub.Begin(begin_request("newest", {"n": 4}, guard="job")).granted
        assert newest.run.fencing_token > later.run.fencing_token
        fresh = stub.Begin(begin_request("fresh", {"n": 5}, guard="lease")).granted
        assert fresh.run.fencing_token > short.run.fencing_token


def test_a_resume_from_pruned_history_gets_a_resynced_snapshot_after_a_kill(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    """With the history pruned, a resume from an old revision is resynced; a recent one is not."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    first = served("--store", url, "--history", "2")
    with grpc.insecure_channel(first.address) as channel:
        stub = sync_stub(channel)
        epoch = _current(stub, "job").epoch
        for n in range(6):
            granted = stub.Begin(begin_request(f"op-{n}", {"n": n}, guard="job")).granted
            stub.End(end_request(granted))
        last = _current(stub, "job").revision
    _kill(first)
    second = served("--store", url, "--history", "2")
    with grpc.insecure_channel(second.address) as channel:
        stub = sync_stub(channel)
        old = _watch(stub, pb.WatchRequest(guards=["job"], after_revision=1, epoch=epoch), 1)[0]
        assert old.snapshot.resynced
        assert old.snapshot.revision == last
        recent = _watch(
            stub, pb.WatchRequest(guards=["job"], after_revision=last - 1, epoch=epoch), 1
        )[0]
        assert recent.change.revision == last
        assert recent.change.release_reason == pb.RELEASE_REASON_ENDED


def test_a_second_server_on_the_same_file_is_refused(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    """Only one server process may use a sqlite file; a second exits with a clear message."""
    url = f"sqlite://{tmp_path / 'runguard.db'}"
    served("--store", url)
    with pytest.raises(RuntimeError, match="in use by another RunGuard process"):
        served("--store", url)
