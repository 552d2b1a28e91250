"""A run records who was granted it: at once or from the queue, in the store's documents, and
only its own principal may replay its Begin."""

from __future__ import annotations

import json

import pytest

from runguard.server.core import (
    BeginCommand,
    ChangeKind,
    Granted,
    GuardDoc,
    GuardPolicy,
    Queued,
    begin,
    end,
)
from runguard.server.errors import OperationConflict
from runguard.server.stores import codec_v1
from runguard.server.stores.codec import decode_change, decode_doc, encode_change, encode_doc
from tests.runs import run_of

POLICY = GuardPolicy(capacity=1, max_queue=10)


def _command(operation_id: str, principal: str, **more: float) -> BeginCommand:
    return BeginCommand(
        operation_id=operation_id,
        fingerprint=f"fp-{operation_id}",
        lease_token=f"token-{operation_id}",
        principal=principal,
        **more,  # type: ignore[arg-type]
    )


def test_a_grant_and_a_grant_from_the_queue_carry_the_principal() -> None:
    """The run of an immediate grant, and the one a waiter gets when the slot frees, name
    the principal of their own Begin, in the outcome, the holders and the changes."""
    first = begin(GuardDoc(name="g", next_fencing=1), POLICY, _command("a", "alice"), 0.0)
    assert isinstance(first.outcome, Granted)
    assert first.outcome.run.principal == "alice"
    queued = begin(first.doc, POLICY, _command("b", "bob", wait=60), 1.0)
    assert isinstance(queued.outcome, Queued)
    assert [w.principal for w in queued.doc.queue] == ["bob"]
    freed = end(queued.doc, POLICY, "a", "token-a", 2.0)
    assert [(c.kind, run_of(c).principal) for c in freed.changes] == [
        (ChangeKind.RELEASED, "alice"),
        (ChangeKind.ACQUIRED, "bob"),
    ]
    assert [h.run.principal for h in freed.doc.holders] == ["bob"]


@pytest.mark.parametrize("wait", [pytest.param(0.0, id="held"), pytest.param(60.0, id="queued")])
def test_only_the_same_principal_may_replay_a_begin(wait: float) -> None:
    """A Begin repeated by another principal with the same operation_id and submission is an
    OperationConflict (it would hand out the lease token); the same principal's replay is not."""
    doc = begin(GuardDoc(name="g", next_fencing=1), POLICY, _command("h", "holder"), 0.0).doc
    if not wait:  # free the slot, so alice's run holds it
        doc = end(doc, POLICY, "h", "token-h", 0.5).doc
    doc = begin(doc, POLICY, _command("a", "alice", wait=wait), 1.0).doc
    with pytest.raises(OperationConflict, match="of another principal"):
        begin(doc, POLICY, _command("a", "mallory", wait=wait), 2.0)
    again = begin(doc, POLICY, _command("a", "alice", wait=wait), 2.0)
    assert again.outcome.__class__ is (Queued if wait else Granted)


def test_the_principal_survives_the_store_codec_and_old_documents_read_as_anonymous() -> None:
    """A document and a change keep the principal through the codec; a document written
    before principals existed (format 1 JSON without "who") reads with principal ""."""
    granted = begin(GuardDoc(name="g", next_fencing=1), POLICY, _command("a", "alice"), 0.0)
    queued = begin(granted.doc, POLICY, _command("b", "bob", wait=60), 0.0)
    assert decode_doc(encode_doc(queued.doc)) == queued.doc
    change = granted.changes[0]
    assert run_of(decode_change(encode_change(change), 0)).principal == "alice"
    data = json.loads(codec_v1.encode_doc(queued.doc))
    del data["holders"][0]["run"]["who"]
    del data["queue"][0]["who"]
    old = decode_doc(json.dumps(data))
    assert old.holders[0].run.principal == ""
    assert old.queue[0].principal == ""
