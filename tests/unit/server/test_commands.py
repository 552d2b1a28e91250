"""The command path (group commit): commands that arrive together are decided in arrival
order on each guard's latest document and written in one store call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runguard.server.commands import CAS_ATTEMPTS, Commands, Step
from runguard.server.core import (
    BeginCommand,
    GuardDoc,
    GuardPolicy,
    Transition,
    begin,
    end,
    keep_alive,
)
from runguard.server.errors import RunGuardError, StoreUnavailable, TooManyGuards
from runguard.server.metrics import Metrics
from runguard.server.stores import Batch, Commit, MemoryStore, Versioned, Write

T0 = 1_000.0
POLICY = GuardPolicy(capacity=2, dedup_window=60.0, max_queue=10)


class CountingStore(MemoryStore):
    """A memory store that counts its round trips and can be told to fail or to let
    another writer move a guard first."""

    def __init__(self, *, exclusive: bool = True) -> None:
        super().__init__(fencing_floor=1)
        self._exclusive = exclusive
        self.batches: list[list[str]] = []
        self.reads: list[list[str]] = []
        self.failing: set[str] = set()
        self.move_first: list[str] = []

    @property
    def inline(self) -> bool:
        return False  # its writes wait, as a store with a round trip's do

    @property
    def exclusive(self) -> bool:
        return self._exclusive

    async def read_many(self, guards: Sequence[str]) -> list[Versioned]:
        self.reads.append(list(guards))
        return await super().read_many(guards)

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        self.batches.append([w.guard for w in writes])
        if self.failing & {w.guard for w in writes}:
            raise StoreUnavailable("the store is down")
        while self.move_first:  # another replica writes the guard just before us
            guard = self.move_first.pop()
            current = await super().read(guard)
            t = begin(
                current.doc,
                POLICY,
                BeginCommand(operation_id="other", fingerprint="fp-other", lease_token="tok-other"),
                T0,
            )
            await super().commit_batch([Write(guard, current.version, t.doc, t.changes)])
        await asyncio.sleep(0)  # a round trip: later commands pile up meanwhile
        return await super().commit_batch(writes)


def commands_for(store: MemoryStore, **kwargs: Any) -> tuple[Commands, list[Commit]]:
    seen: list[Commit] = []
    options: dict[str, Any] = {"max_guards": 1_000, **kwargs}
    return Commands(store, clock=lambda: T0, on_commit=seen.append, **options), seen


def grant(op: str) -> Step:
    return lambda doc, now: begin(
        doc,
        POLICY,
        BeginCommand(operation_id=op, fingerprint=f"fp-{op}", lease_token=f"tok-{op}"),
        now,
    )


def release(op: str) -> Step:
    return lambda doc, now: end(doc, POLICY, op, f"tok-{op}", now)


def renew(op: str) -> Step:
    return lambda doc, now: keep_alive(doc, POLICY, op, f"tok-{op}", now, ttl=30)


OPS = st.sampled_from(["a", "b", "c", "d"])
ACTIONS = st.tuples(
    st.sampled_from(["grant", "release", "renew"]), st.sampled_from(["g", "h"]), OPS
)
STEPS = {"grant": grant, "release": release, "renew": renew}


def reference(actions: Sequence[tuple[str, str, str]]) -> tuple[list[Any], dict[str, GuardDoc]]:
    """The outcomes and documents of the actions applied one by one, in order."""
    docs: dict[str, GuardDoc] = {}
    outcomes: list[Any] = []
    for kind, guard, op in actions:
        doc = docs.get(guard, GuardDoc(name=guard, next_fencing=1))
        try:
            t: Transition[Any] = STEPS[kind](op)(doc, T0)
        except RunGuardError as error:
            outcomes.append(type(error))
            continue
        outcomes.append(t.outcome)
        if t.dirty:
            docs[guard] = t.doc
    return outcomes, docs


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.lists(ACTIONS, min_size=1, max_size=8), min_size=1, max_size=6))
def test_commands_sent_together_end_as_if_run_one_by_one_in_arrival_order(
    groups: list[list[tuple[str, str, str]]],
) -> None:
    """However commands are grouped into batches, each gets the outcome it would get had
    every command run alone, in the order they arrived, and the store ends the same."""

    async def run() -> tuple[list[Any], dict[str, GuardDoc]]:
        store = CountingStore()
        commands, _ = commands_for(store)
        outcomes: list[Any] = []
        for group in groups:
            calls = [commands.apply(g, STEPS[kind](op)) for kind, g, op in group]
            for result in await asyncio.gather(*calls, return_exceptions=True):
                outcomes.append(
                    type(result) if isinstance(result, BaseException) else result[0].outcome
                )
        stored = {g: (await store.read(g)).doc for g in ("g", "h")}
        await commands.close()
        return outcomes, {g: d for g, d in stored.items() if d.holders or d.accepted}

    outcomes, docs = asyncio.run(run())
    expected, expected_docs = reference([a for group in groups for a in group])
    assert outcomes == expected
    assert docs == {g: d for g, d in expected_docs.items() if d.holders or d.accepted}


async def test_commands_that_arrive_together_are_one_store_write() -> None:
    """Twenty Begins on twenty guards sent at once cost one read and one write of the
    store, and every one is granted."""
    store = CountingStore()
    commands, seen = commands_for(store)
    results = await asyncio.gather(*(commands.apply(f"g{n}", grant("a")) for n in range(20)))
    assert all(t.outcome.run.fencing_token for t, _ in results)
    assert len(store.batches) == 1
    assert len(store.reads) == 1
    assert [c.guard for c in seen] == [f"g{n}" for n in range(20)]
    await commands.close()


async def test_a_kept_document_saves_the_read() -> None:
    """A guard this process wrote is not read again before its next command."""
    store = CountingStore()
    commands, _ = commands_for(store)
    await commands.apply("g", grant("a"))
    await commands.apply("g", release("a"))
    assert store.reads == [["g"]]
    assert len(store.batches) == 2
    await commands.close()


async def test_commands_of_one_guard_in_one_batch_see_each_other() -> None:
    """A Begin and the End of the same run sent together: the End finds the run."""
    store = CountingStore()
    commands, _ = commands_for(store)
    (granted, commit), (ended, _) = await asyncio.gather(
        commands.apply("g", grant("a")), commands.apply("g", release("a"))
    )
    assert granted.outcome.run.operation_id == "a"
    assert ended.outcome.value == "ended"
    assert commit is not None
    assert [c.kind.value for c in commit.changes] == [
        "acquired",
        "released",
    ]
    assert len(store.batches) == 1
    await commands.close()


async def test_a_failed_batch_fails_its_own_commands_only() -> None:
    """A batch the store cannot write fails each of its commands with the store's error;
    the commands of the next batch are written."""
    store = CountingStore()
    commands, _ = commands_for(store)
    store.failing = {"down"}
    first = asyncio.gather(
        commands.apply("down", grant("a")), commands.apply("up", grant("a")), return_exceptions=True
    )
    await asyncio.sleep(0)
    later = asyncio.ensure_future(commands.apply("later", grant("a")))
    failed = await first
    assert [type(r) for r in failed] == [StoreUnavailable, StoreUnavailable]
    store.failing = set()
    transition, commit = await later
    assert commit is not None
    assert transition.outcome.run.operation_id == "a"
    await commands.close()


async def test_a_guard_moved_by_another_writer_is_decided_again_without_a_read() -> None:
    """When another writer moved a guard first, the failed compare brings its current
    document and the command is decided on that (here: the guard is now full, so the
    Begin is refused); no read is made for it, and the conflict is counted."""
    store = CountingStore(exclusive=False)
    metrics = Metrics()
    commands, _ = commands_for(store, metrics=metrics)
    await commands.apply("g", grant("a"))
    store.move_first = ["g"]
    reads = len(store.reads)
    transition, commit = await commands.apply("g", grant("b"))
    assert metrics.registry.get_sample_value("runguard_store_conflicts_total") == 1
    assert commit is None
    assert type(transition.outcome).__name__ == "Rejection"
    assert [h.run.operation_id for h in transition.doc.holders] == ["a", "other"]
    assert len(store.reads) == reads
    await commands.close()


async def test_a_command_that_writes_nothing_reads_a_shared_store_first() -> None:
    """On a store other replicas write, a command that changes nothing is decided on a
    fresh read, never only on the document kept from earlier."""
    store = CountingStore(exclusive=False)
    commands, _ = commands_for(store)
    await commands.apply("g", grant("a"))
    reads = len(store.reads)
    transition, commit = await commands.apply("g", grant("a"))  # a replay: no write
    assert commit is None
    assert transition.outcome.replayed
    assert len(store.reads) == reads + 1


async def test_new_guards_beyond_the_limit_fail_alone() -> None:
    """With room for one more guard, of two new guards in one batch the second is refused
    with TooManyGuards and the first, and a stored guard's command, are written."""
    store = CountingStore()
    commands, _ = commands_for(store, max_guards=2)
    await commands.apply("stored", grant("a"))
    results = await asyncio.gather(
        commands.apply("new1", grant("a")),
        commands.apply("new2", grant("a")),
        commands.apply("stored", grant("b")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["tuple", "TooManyGuards", "tuple"]
    assert isinstance(results[1], TooManyGuards)
    assert await store.guard_count() == 2
    await commands.close()


async def test_a_guard_that_keeps_moving_gives_up_as_unavailable() -> None:
    """A command whose guard moves before every one of its writes fails after
    CAS_ATTEMPTS tries as StoreUnavailable, naming the guard."""

    class AlwaysMoved(CountingStore):
        async def commit_batch(self, writes: Sequence[Write]) -> Batch:
            return Batch((), {w.guard: await self.read(w.guard) for w in writes})

    store = AlwaysMoved()
    commands, _ = commands_for(store)
    with pytest.raises(StoreUnavailable, match="'g' is too contended"):
        await commands.apply("g", grant("a"))
    assert CAS_ATTEMPTS > 1
    await commands.close()


async def test_a_slow_write_holds_up_only_its_own_guards() -> None:
    """With two writes in flight, while one batch waits on the store, commands of other
    guards are written in a batch of their own; a later command of the waiting guard is
    written after it, in order."""

    class SlowFor(CountingStore):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def commit_batch(self, writes: Sequence[Write]) -> Batch:
            if any(w.guard == "slow" for w in writes):
                await self.gate.wait()
            return await super().commit_batch(writes)

    store = SlowFor()
    commands, seen = commands_for(store, writes_in_flight=2)
    first = asyncio.ensure_future(commands.apply("slow", grant("a")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(commands.apply("slow", release("a")))
    _, other = await asyncio.wait_for(commands.apply("fast", grant("a")), 5)
    assert other is not None
    assert not first.done()
    store.gate.set()
    (granted, _), (ended, _) = await asyncio.gather(first, second)
    assert granted.outcome.run.operation_id == "a"
    assert ended.outcome.value == "ended"
    assert [c.guard for c in seen] == ["fast", "slow", "slow"]
    await commands.close()


@pytest.mark.parametrize("writes_in_flight", [1, 2, 4])
async def test_a_command_sent_as_a_batch_ends_is_written(writes_in_flight: int) -> None:
    """Callers that send their next command the moment the last one is answered (as the
    batch that answered it ends) are never left waiting for a writer: 16 callers, 20
    commands each, all on one guard, all written."""
    store = CountingStore()
    commands, _ = commands_for(store, writes_in_flight=writes_in_flight)
    answered = 0

    async def caller(n: int) -> None:
        nonlocal answered
        for k in range(10):
            await commands.apply("one", grant(f"{n}-{k}"))
            await commands.apply("one", release(f"{n}-{k}"))
            answered += 2

    await asyncio.wait_for(asyncio.gather(*(caller(n) for n in range(16))), 10)
    assert answered == 16 * 20
    await commands.close()


async def test_a_command_sent_while_the_last_writer_leaves_is_written() -> None:
    """A command sent in the very step the only writer finishes its last batch (a request
    that came in meanwhile) still gets a writer."""
    store = MemoryStore(fencing_floor=1)
    landed = asyncio.Event()
    commands = Commands(
        store,
        clock=lambda: T0,
        max_guards=1_000,
        on_commit=lambda commit: landed.set(),
        writes_in_flight=1,
    )

    async def arrives_meanwhile() -> Any:
        await landed.wait()  # woken inside the writer's last step, runs right after it
        return await commands.apply("g", release("a"))

    late = asyncio.ensure_future(arrives_meanwhile())
    await commands.apply("g", grant("a"))
    ended, _ = await asyncio.wait_for(late, 5)
    assert ended.outcome.value == "ended"
    await commands.close()


async def test_on_a_store_that_never_waits_an_idle_command_runs_in_its_caller() -> None:
    """On memory://, a command that finds nothing in flight is decided and written before
    its caller gives the event loop a turn: no writer task, no hop."""
    store = MemoryStore(fencing_floor=1)
    commands, seen = commands_for(store)
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)
    transition, commit = await commands.apply("g", grant("a"))
    assert turned == []
    assert commit is not None
    assert seen == [commit]
    assert transition.outcome.run.operation_id == "a"
    await commands.close()
