"""SSE event ids: EPOCH:REVISION[.N], and what an id that does not parse means."""

from __future__ import annotations

import pytest

from runguard.server.http.sse import encode_event, event_id, parse_event_id
from runguard.v1 import runguard_pb2 as pb


@pytest.mark.parametrize(
    ("epoch", "revision", "index"),
    [
        pytest.param("5b0c2f3e9a4d", 7, None, id="snapshot-or-progress"),
        pytest.param("5b0c2f3e9a4d", 7, 0, id="first-change"),
        pytest.param("cluster-12_a", 2**62, 3, id="large-revision"),
    ],
)
def test_an_id_parses_back_to_what_made_it(epoch: str, revision: int, index: int | None) -> None:
    """parse_event_id inverts event_id."""
    assert parse_event_id(event_id(epoch, revision, index)) == (epoch, revision, index)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("no-colon", id="no-revision"),
        pytest.param("e:-1", id="negative"),
        pytest.param("e:1.x", id="bad-index"),
        pytest.param("e p:1", id="space-in-epoch"),
        pytest.param("e:" + "9" * 30, id="revision-too-long"),
    ],
)
def test_an_id_that_does_not_parse_resyncs(text: str) -> None:
    """An unparsable id names an epoch no store has (so the stream resyncs), revision 0."""
    epoch, revision, index = parse_event_id(text)

    assert (revision, index) == (0, None)
    assert epoch == "unparsed-event-id"


@pytest.mark.parametrize(("more", "has_id"), [(True, False), (False, True)], ids=["part", "last"])
def test_only_the_last_part_of_a_snapshot_carries_an_id(more: bool, has_id: bool) -> None:
    """A reconnect in the middle of a snapshot in parts resumes from before it, never from a
    half-sent snapshot: parts before the last have no ``id:``."""
    message = pb.WatchResponse(epoch="e1", snapshot=pb.Snapshot(revision=9, more=more))
    text = encode_event(message, None).decode()
    assert text.startswith("id: e1:9\n") is has_id
    assert "event: snapshot\n" in text
