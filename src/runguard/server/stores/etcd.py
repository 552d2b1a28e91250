"""``etcd://h1:p1,h2:p2/prefix``: guard documents in etcd, for several RunGuard replicas.

Layout under the key prefix (``runguard`` unless the URL names one):

- ``<prefix>/g/<guard>``: one key per guard. Its value is a record (``codec``) of the
  guard's document *and the changes of the commit that wrote it*, so etcd's
  watch on ``<prefix>/g/`` is our change feed and etcd's revision of each write
  is our revision. The key's ``mod_revision`` is the document's version. A
  reclaimed guard's key is deleted (such a commit carries no changes).
- ``<prefix>/meta/epoch``: a random id created once; the store's epoch is the
  cluster id and this id (so two prefixes of one cluster never share one).
- ``<prefix>/meta/defaults``: the store-wide guard settings, written once by the
  first replica.
- ``<prefix>/meta/reclaimed/<shard>``: written by every reclaim of a guard whose name
  falls in that shard (``reclaim_shard``). A guard read as absent at revision r has the
  version -r, and creating it compares that its shard's key was not written after r: a
  create from a read older than the name's reclaim would start from a floor below the
  tokens of the name's last life.

Fencing: a guard written for the first time (or again after it was reclaimed)
starts its tokens at ``FENCING_BASE + (r << 16)``, ``r`` the etcd revision its
absence was read at. A guard's tokens grow by one per grant and a commit grants
at most ``CAPACITY_MAX`` (65,535) runs, so every token of a name's earlier life
is below that: fencing tokens increase per name forever, with no per-name state
kept and no counter every replica would contend on.

Every read of all guards is paged (``PAGE`` keys a Range) at one pinned
revision, so no answer nears gRPC's message limit however many guards exist.
- ``<prefix>/r/<replica>``: one presence key per running RunGuard replica,
  attached to an etcd lease the replica keeps alive.

Compare-and-swap is one ``Txn`` for a whole batch of guards (up to ``TXN_OPS``
compares and ``TXN_BYTES`` of records): per guard ``mod_revision == version``
(``create_revision == 0`` for a guard never written), then the puts, so the
guards of a batch share one revision. A failed ``Txn`` reads every guard of the
batch in its failure branch, so the caller decides again on the current
documents without a read of its own. A ``Txn`` is sent once and never resent by
the client library: if its answer is lost (timeout, connection cut, leader
change), the store reads one of its keys back and looks for the batch's commit
id; a guard that moved on without it is a plain conflict (sent again), and a
guard still at the old version is reported ``StoreUnavailable`` ("outcome
unknown"), since the write may yet land.

Waiters carry the replica they wait on. A replica whose presence key is gone
(its lease ran out: it died) has its waiters dropped from every document this
store reads, and a write that promotes another replica's waiter also compares
that replica's presence key, so a slot is never handed to a waiter nobody waits
for. The holders of a dead replica keep their leases: any replica ends or
expires them.

Clocks: lease expiry lives in our documents (``expires_at``) and is judged by
the clock of whichever replica settles the guard, never by etcd's lease TTLs
(etcd resets those on a leader change). So the replicas' clocks must agree to
well within the shortest lease TTL in use (NTP: milliseconds).

History: ``changes_since`` replays from etcd's own history (a watch from a
revision), bounded like the other stores by ``history`` changes, and gives
None once etcd has compacted the revisions needed.

Every client error leaves as ``StoreUnavailable`` with a sentence for people
(``raise ... from``), never the client library's repr.

This module is the compare-and-swap path, the reads and the feed; it composes
``etcd_presence`` (the replicas' presence keys), ``etcd_records`` (the guard keys'
records and this replica's sent writes) and ``etcd_calls`` (failures said for people).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import structlog
from etcd3aio import Etcd3Client, prefix_range_end
from etcd3aio._protobuf import (
    Compare,
    KVStub,
    MaintenanceStub,
    RangeRequest,
    RequestOp,
    StatusRequest,
    TxnRequest,
)
from etcd3aio.kv import KVService, SortOrder, SortTarget

from runguard.server.core import Change, GuardDoc, GuardSettings
from runguard.server.errors import StoreUnavailable, VersionConflict
from runguard.server.stores.base import (
    Batch,
    Commit,
    FeedGap,
    Store,
    Versioned,
    Write,
    reclaim_shard,
)
from runguard.server.stores.codec import CodecError, decode_settings, encode_settings
from runguard.server.stores.etcd_calls import FAILURES as _FAILURES
from runguard.server.stores.etcd_calls import call, closing, describe_failure
from runguard.server.stores.etcd_presence import Presence
from runguard.server.stores.etcd_records import Records

__all__ = [
    "COUNT_EVERY",
    "FENCING_BASE",
    "PAGE",
    "TXN_BYTES",
    "TXN_OPS",
    "EtcdStore",
    "describe_failure",
]

FENCING_BASE = 1 << 52
"""Where fencing tokens of this store start: above the clock-seeded tokens (microseconds
since 1970) that earlier versions handed out, until the year 2112."""

COUNT_EVERY = 1.0
"""Seconds an etcd count of the guards is used before etcd is asked again (--max-guards is
enforced within about that many seconds' worth of new guards across replicas)."""

TXN_OPS = 120
"""Compares (and writes) one Txn holds at most: etcd refuses more than 128 by default
(``--max-txn-ops``)."""

TXN_BYTES = 1 << 20
"""Bytes of records one Txn carries at most: etcd refuses requests above 1.5 MiB by default
(``--max-request-bytes``)."""

PAGE = 500
"""Keys per Range when reading many guards (a page of full records stays far below 4 MiB)."""

log = structlog.get_logger("runguard")

_CLOSED = object()


def _chunks(writes: Sequence[tuple[Write, bytes]]) -> list[list[tuple[Write, bytes]]]:
    """``writes`` (with their records) in runs that each fit one Txn (see TXN_OPS, TXN_BYTES)."""
    chunks: list[list[tuple[Write, bytes]]] = [[]]
    ops = size = 0
    for write, value in writes:
        # A create compares two keys; a promoted replica adds one compare at most.
        cost = 2 + len(write.promotes)
        if chunks[-1] and (ops + cost > TXN_OPS or size + len(value) > TXN_BYTES):
            chunks.append([])
            ops = size = 0
        chunks[-1].append((write, value))
        ops, size = ops + cost, size + len(value)
    return chunks if chunks[-1] else []


@dataclasses.dataclass
class _Subscriber:
    after: int
    queue: asyncio.Queue[Commit | object]


class EtcdStore(Store):
    """Guard documents in an etcd cluster, shared by every replica using the same prefix.

    Args:
        endpoints: ``host:port`` of the cluster's members; calls go to the
            live ones (round robin) and fail over when one dies.
        prefix: the key prefix every key of this store lives under.
        fencing_floor: the smallest first fencing token of a guard (see
            ``FENCING_BASE``; tokens start above both).
        history: changes ``changes_since`` replays at most (whole commits).
        timeout: seconds one etcd call may take.
        presence_ttl: seconds of the lease behind this replica's presence key:
            how long after a replica dies its queued waiters are dropped.

    Raises:
        StoreUnavailable: no endpoint answered while the store was opened.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "runguard",
        *,
        fencing_floor: int,
        history: int = 10_000,
        timeout: float = 3.0,
        presence_ttl: int = 5,
    ) -> None:
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._prefix = prefix.strip("/")
        self._records = Records(self._prefix)
        self._guards = self._records.prefix
        self._fencing_floor = fencing_floor
        self._history = history
        self._timeout = timeout
        self._count, self._created, self._counted_at = 0, 0, -COUNT_EVERY
        self._subscribers: list[_Subscriber] = []
        self._client: Etcd3Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Task[None] | None = None
        self._closed = False
        epoch, revision = self._bootstrap()
        super().__init__(epoch=epoch, revision=revision)
        self._presence = Presence(
            self._prefix, self._replica, ttl=presence_ttl, timeout=timeout, connect=self._kv
        )

    # -- opening (blocking, once, before the server serves) -------------------

    def _bootstrap(self) -> tuple[str, int]:
        """The epoch and the newest revision, read with a blocking client, endpoint by endpoint."""
        epoch_key = f"{self._prefix}/meta/epoch".encode()
        errors: list[str] = []
        for endpoint in self._endpoints:
            with grpc.insecure_channel(endpoint) as channel:
                try:
                    status = MaintenanceStub(channel).Status(StatusRequest(), timeout=self._timeout)
                    # Create-if-absent then read: idempotent, so safe to repeat.
                    created = KVStub(channel).Txn(
                        TxnRequest(
                            compare=[KVService.txn_compare_create_revision(epoch_key, 0)],
                            success=[KVService.txn_op_put(epoch_key, uuid.uuid4().hex)],
                            failure=[KVService.txn_op_get(epoch_key)],
                        ),
                        timeout=self._timeout,
                    )
                    token = KVStub(channel).Range(
                        RangeRequest(key=epoch_key), timeout=self._timeout
                    )
                    newest = KVStub(channel).Range(self._newest_request(), timeout=self._timeout)
                except grpc.RpcError as error:
                    detail = error.details() if isinstance(error, grpc.Call) else str(error)
                    errors.append(f"{endpoint}: {detail}")
                    continue
            del created
            cluster = status.header.cluster_id
            epoch = f"{cluster:x}-{token.kvs[0].value.decode()}"
            return epoch, newest.kvs[0].mod_revision if newest.kvs else 0
        raise StoreUnavailable(f"no etcd endpoint answered: {', '.join(errors)}")

    def _newest_request(self) -> RangeRequest:
        """The guard key written last (its mod_revision is the store's newest revision)."""
        return RangeRequest(
            key=self._guards,
            range_end=prefix_range_end(self._guards),
            sort_order=int(SortOrder.DESCEND),
            sort_target=int(SortTarget.MOD),
            limit=1,
            keys_only=True,
        )

    # -- running -------------------------------------------------------------------

    @property
    def durable(self) -> bool:
        return True

    def _api(self) -> Etcd3Client:
        """The connected client (background tasks run only once it is)."""
        assert self._client is not None
        return self._client

    async def _kv(self) -> KVService:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        if self._started is None or (
            self._started.done()
            and not self._started.cancelled()
            and self._started.exception() is not None
        ):
            self._started = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._started)
        except _FAILURES as error:
            raise StoreUnavailable(describe_failure(error, self._timeout)) from error
        assert self._client is not None
        assert self._client.kv is not None
        return self._client.kv

    async def _start(self) -> None:
        """Connect, and be present before this replica queues anybody (a waiter whose
        replica has no presence key would count as abandoned)."""
        if self._client is None:
            client = Etcd3Client(self._endpoints, rpc_max_attempts=3)
            await client.connect()
            self._client = client
        client = self._api()
        lease = await self._presence.enter(client)
        if self._closed:
            return
        self._tasks.append(
            asyncio.create_task(self._presence.hold(client, lease), name="runguard-etcd-presence")
        )
        self._tasks.append(
            asyncio.create_task(self._presence.follow(client), name="runguard-etcd-peers")
        )

    def _reclaimed(self, guard: str) -> bytes:
        """The key every reclaim of a name of this guard's shard writes (see read)."""
        return f"{self._prefix}/meta/reclaimed/{reclaim_shard(guard)}".encode()

    # -- calls -----------------------------------------------------------------------

    async def _call(self, pending: Any) -> Any:
        """Await one (retry-safe) client call; its failures leave as StoreUnavailable."""
        return await call(pending, self._timeout)

    def _new(self, guard: str, revision: int) -> GuardDoc:
        """A guard not stored as of etcd ``revision`` (see the module's word on fencing)."""
        return GuardDoc(
            name=guard, next_fencing=max(self._fencing_floor, FENCING_BASE + (revision << 16))
        )

    async def read(self, guard: str) -> Versioned:
        return (await self.read_many([guard]))[0]

    async def read_many(self, guards: Sequence[str]) -> list[Versioned]:
        return await self._read_named(await self._kv(), guards)

    async def _read_named(
        self, kv: KVService, guards: Sequence[str], pinned: int = 0
    ) -> list[Versioned]:
        """Each named guard, ``PAGE // 5`` to a Txn, as of etcd revision ``pinned``
        (0: the newest)."""
        found: list[Versioned] = []
        for start in range(0, len(guards), PAGE // 5):
            names = guards[start : start + PAGE // 5]
            reply = await self._call(
                kv.txn(
                    [],
                    [KVService.txn_op_get(self._records.key(n), revision=pinned) for n in names],
                    timeout=self._timeout,
                )
            )
            read_at = pinned or int(reply.header.revision)
            for name, answer in zip(names, reply.responses, strict=True):
                found.append(await self._versioned(name, answer.response_range.kvs, read_at))
        return found

    async def _versioned(self, guard: str, kvs: Sequence[Any], read_at: int) -> Versioned:
        """A guard as one Range of its key at etcd revision ``read_at`` found it."""
        if not kvs:
            # Not stored as of this revision: the version names it (see commit_batch), so a
            # create from this read fails if the name's shard saw a reclaim since.
            return Versioned(self._new(guard, read_at), -read_at)
        item = kvs[0]
        self._advance(item.mod_revision)
        doc = await self._presence.visible(self._records.decode(item.value, item.mod_revision).doc)
        return Versioned(doc, int(item.mod_revision))

    async def commit_batch(self, writes: Sequence[Write]) -> Batch:
        kv = await self._kv()
        # One id for the call: a Txn whose answer is lost is found by it on its own keys.
        commit_id = uuid.uuid4().hex
        records = self._records.encode(writes, commit_id)
        commits: list[Commit] = []
        moved: dict[str, Versioned] = {}
        for chunk in _chunks(records):
            landed, chunk_moved = await self._commit_txn(kv, chunk, commit_id)
            commits.extend(landed)
            moved.update(chunk_moved)
        return Batch(tuple(commits), moved)

    async def _commit_txn(
        self, kv: KVService, records: Sequence[tuple[Write, bytes]], commit_id: str
    ) -> tuple[list[Commit], dict[str, Versioned]]:
        """One ``Txn`` for ``records``: a compare per guard (and per promoted waiter's
        replica), all of them written or none."""
        writes = [w for w, _ in records]
        compares: list[Compare] = []
        success: list[RequestOp] = []
        shards: set[bytes] = set()
        for write, value in records:
            key = self._records.key(write.guard)
            if write.version <= 0:
                # Still absent, and not reclaimed since it was read absent at -version: a
                # name reclaimed meanwhile had tokens above the floor that read saw.
                compares.append(KVService.txn_compare_create_revision(key, 0))
                compares.append(
                    Compare(
                        result=Compare.LESS,
                        target=Compare.MOD,
                        key=self._reclaimed(write.guard),
                        mod_revision=-write.version + 1,
                    )
                )
            else:
                compares.append(
                    Compare(
                        result=Compare.EQUAL,
                        target=Compare.MOD,
                        key=key,
                        mod_revision=write.version,
                    )
                )
            if write.reclaim:
                success.append(KVService.txn_op_delete(key))
                shards.add(self._reclaimed(write.guard))
            else:
                success.append(KVService.txn_op_put(key, value))
        # etcd refuses a Txn that writes one key twice: one put per shard of reclaims.
        success.extend(KVService.txn_op_put(shard, b"") for shard in sorted(shards))
        # A waiter of another replica promoted here: that replica must still be there.
        owners = sorted(set().union(*(w.promotes for w in writes)) - {self._replica, ""})
        presence = [self._presence.key(name) for name in owners]
        compares.extend(
            Compare(result=Compare.GREATER, target=Compare.CREATE, key=p, create_revision=0)
            for p in presence
        )
        self._records.remember_sent(commit_id, writes)
        failure = [KVService.txn_op_get(self._records.key(w.guard)) for w in writes]
        failure.extend(KVService.txn_op_get(p) for p in presence)
        try:
            reply = await kv.txn(
                compares,
                success,
                failure,
                timeout=self._timeout,
                max_attempts=1,  # never resend a Txn: its first try may have landed
            )
        except (*_FAILURES, asyncio.CancelledError) as error:
            if isinstance(error, asyncio.CancelledError):
                raise
            try:
                revision = await self._resolve(writes, commit_id, error)
            except VersionConflict:  # it never landed: sent again, its guards' reads come back
                self._records.forget_sent(commit_id)
                return [], {}
        else:
            if not reply.succeeded:
                self._records.forget_sent(commit_id)
                return [], await self._moved(writes, owners, reply)
            revision = int(reply.header.revision)
        self._advance(revision)
        self._created += sum(1 for w in writes if w.version <= 0 and not w.reclaim)
        return [w.landed(revision) for w in writes], {}

    async def _moved(
        self, writes: Sequence[Write], owners: Sequence[str], reply: Any
    ) -> dict[str, Versioned]:
        """The guards of a failed Txn that are not as their write read them, from the
        failure branch's reads: moved on, or with a promoted waiter's replica gone."""
        for name, answer in zip(owners, reply.responses[len(writes) :], strict=True):
            if not answer.response_range.kvs:
                self._presence.lost(name)
        read_at = int(reply.header.revision)
        moved: dict[str, Versioned] = {}
        for write, answer in zip(writes, reply.responses, strict=False):
            current = await self._versioned(write.guard, answer.response_range.kvs, read_at)
            # An absent guard reads at -read_at: a create always decides again on it,
            # since its shard's reclaims cannot be compared from here.
            if current.version != write.version or write.promotes & self._presence.dead:
                moved[write.guard] = current
        return moved

    async def _resolve(self, writes: Sequence[Write], commit_id: str, error: BaseException) -> int:
        """The revision of a Txn whose answer was lost, found by reading a key back.

        Raises:
            VersionConflict: the Txn can never land (a guard moved on without it).
            StoreUnavailable: it may yet land, or etcd cannot be read.
        """
        written = next((w for w in writes if not w.reclaim), None)
        if written is None:  # a delete that landed or not: a later settle reclaims again
            raise StoreUnavailable(
                f"a write's outcome is unknown ({describe_failure(error, self._timeout)}); "
                "try again"
            ) from error
        kv = await self._kv()
        try:
            found = await kv.get(self._records.key(written.guard), timeout=self._timeout)
        except _FAILURES as read_error:
            raise StoreUnavailable(
                f"a write's outcome is unknown ({describe_failure(error, self._timeout)}) and "
                f"cannot be read back ({describe_failure(read_error, self._timeout)}); try again"
            ) from error
        if found.kvs:
            item = found.kvs[0]
            if self._records.decode(item.value, item.mod_revision).commit_id == commit_id:
                return int(item.mod_revision)
            if item.mod_revision != written.version:
                raise VersionConflict("the guard moved on while a write's answer was lost")
        elif written.version > 0:
            raise VersionConflict("the guard is gone")
        raise StoreUnavailable(
            f"a write's outcome is unknown ({describe_failure(error, self._timeout)}); try again"
        ) from error

    async def snapshot(self, guards: Sequence[str] | None) -> tuple[int, list[GuardDoc]]:
        kv = await self._kv()
        # The first read pins the revision every page is read at; the snapshot
        # says the newest guard write as of it (what a resume replays after).
        first = await self._call(
            kv.txn([], [RequestOp(request_range=self._newest_request())], timeout=self._timeout)
        )
        pinned = int(first.header.revision)
        newest = first.responses[0].response_range.kvs
        revision = newest[0].mod_revision if newest else 0
        self._advance(revision)
        docs: list[GuardDoc] = []
        if guards is None:
            cursor = self._guards
            end = prefix_range_end(self._guards)
            while True:
                page = await self._call(
                    kv.get(cursor, end, revision=pinned, limit=PAGE, timeout=self._timeout)
                )
                for item in page.kvs:
                    docs.append(
                        await self._presence.visible(
                            self._records.decode(item.value, item.mod_revision).doc
                        )
                    )
                if not page.more or not page.kvs:
                    break
                cursor = page.kvs[-1].key + b"\0"
        else:
            docs = [v.doc for v in await self._read_named(kv, guards, pinned)]
        return revision, docs

    async def list_guards(self, after: str, limit: int) -> tuple[int, list[GuardDoc]]:
        kv = await self._kv()
        start = self._records.key(after) + b"\0" if after else self._guards
        page = await self._call(
            kv.get(start, prefix_range_end(self._guards), limit=limit, timeout=self._timeout)
        )
        docs = [self._records.decode(i.value, i.mod_revision).doc for i in page.kvs]
        return self._revision, [await self._presence.visible(d) for d in docs]

    async def guard_count(self) -> int:
        # etcd counts by walking its index: ask at most once a second, and add the
        # guards this replica created since (other replicas' show at the next ask).
        now = time.monotonic()
        if now - self._counted_at < COUNT_EVERY:
            return self._count + self._created
        kv = await self._kv()
        found = await self._call(
            kv.get(
                self._guards,
                prefix_range_end(self._guards),
                count_only=True,
                timeout=self._timeout,
            )
        )
        self._count, self._created, self._counted_at = int(found.count), 0, now
        return self._count

    async def defaults(self, proposed: GuardSettings) -> GuardSettings:
        kv = await self._kv()
        key = f"{self._prefix}/meta/defaults".encode()
        reply = await self._call(
            kv.txn(
                [KVService.txn_compare_create_revision(key, 0)],
                [KVService.txn_op_put(key, encode_settings(proposed))],
                [KVService.txn_op_get(key)],
                timeout=self._timeout,
            )
        )
        if reply.succeeded:
            return proposed
        try:
            return decode_settings(reply.responses[0].response_range.kvs[0].value)
        except CodecError as error:
            raise StoreUnavailable(f"etcd holds bad guard defaults: {error}") from error

    async def changes_since(self, after: int) -> list[Change] | None:
        kv = await self._kv()
        newest = await self._call(
            kv.txn([], [RequestOp(request_range=self._newest_request())], timeout=self._timeout)
        )
        found = newest.responses[0].response_range.kvs
        # The newest guard write, or a later delete (a reclaim) this replica has seen.
        target = max(found[0].mod_revision if found else 0, self._revision)
        if after > target:
            return None
        if after == target:
            return []
        assert self._client is not None
        assert self._client.watch is not None
        commits: list[list[Change]] = []
        total = 0
        watch = self._client.watch.watch(
            self._guards, prefix_range_end(self._guards), start_revision=after + 1
        )
        try:
            async with asyncio.timeout(self._timeout * 2), closing(watch) as responses:
                async for response in responses:
                    if response.compact_revision > 0 or response.canceled:
                        return None  # etcd compacted the revisions needed
                    for event in response.events:
                        revision = event.kv.mod_revision
                        changes = (
                            list(self._records.decode(event.kv.value, revision).changes)
                            if event.type == 0
                            else []  # a reclaimed guard's delete carries no changes
                        )
                        if changes:
                            commits.append(changes)
                            total += len(changes)
                            # Kept like ChangeLog: None once the oldest commit would be evicted.
                            if total - len(commits[0]) >= self._history:
                                return None
                    # Checked once the response is read: one revision (one Txn) can
                    # write several guards, and all of its changes are replayed.
                    if response.events and response.events[-1].kv.mod_revision >= target:
                        return [c for commit in commits for c in commit]
        except _FAILURES as error:
            raise StoreUnavailable(describe_failure(error, self._timeout)) from error
        raise StoreUnavailable("etcd ended the history watch early; try again")

    # -- the feed -------------------------------------------------------------------

    def subscribe(self) -> AsyncIterator[Commit | FeedGap]:
        subscriber = _Subscriber(self._revision, asyncio.Queue())
        if self._closed:
            subscriber.queue.put_nowait(_CLOSED)
        elif not any(t.get_name() == "runguard-etcd-feed" for t in self._tasks):
            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    self._feed(self._revision + 1), name="runguard-etcd-feed"
                )
            )
        self._subscribers.append(subscriber)
        return self._drain(subscriber)

    async def _feed(self, start: int) -> None:
        """One etcd watch on every guard key, handed to each subscriber after its start."""
        await self._kv()
        assert self._client is not None
        assert self._client.watch is not None
        next_revision = start
        while True:
            watch = self._client.watch.watch(
                self._guards, prefix_range_end(self._guards), start_revision=next_revision
            )
            try:
                async with closing(watch) as responses:
                    async for response in responses:
                        if response.compact_revision > 0:
                            log.error(
                                "etcd_feed_compacted",
                                detail="the feed fell behind etcd's compaction; "
                                "every watcher is resynced",
                                compacted=response.compact_revision,
                            )
                            gap = FeedGap(next_revision - 1)
                            for subscriber in self._subscribers:
                                subscriber.queue.put_nowait(gap)
                            next_revision = response.compact_revision + 1
                            break
                        # Decoded first, handed on together: the commits of one
                        # revision (one Txn) reach watchers with nothing in between.
                        commits = [
                            await self._decoded(event.kv)
                            if event.type == 0  # PUT
                            else self._records.reclaimed(event.kv)  # DELETE: reclaimed
                            for event in response.events
                        ]
                        for commit in commits:
                            if commit is not None:
                                self._deliver(commit)
                        if response.events:
                            next_revision = response.events[-1].kv.mod_revision + 1
            except _FAILURES as error:
                log.warning("etcd_feed_failed", error=describe_failure(error, self._timeout))
                await asyncio.sleep(0.5)

    async def _decoded(self, item: Any) -> Commit | None:
        """The commit a guard key's PUT event records (None for a record nobody can read)."""
        revision = int(item.mod_revision)
        own = self._records.own(item, revision)
        if own is not None:
            return own
        try:
            record = self._records.decode(item.value, revision)
            doc = await self._presence.visible(record.doc)
        except StoreUnavailable as error:
            # A record nobody can read is skipped, not retried for ever.
            log.error(
                "etcd_feed_bad_record", key=item.key.decode(errors="replace"), error=str(error)
            )
            return None
        return Commit(
            revision=revision, guard=self._records.name(item.key), doc=doc, changes=record.changes
        )

    def _deliver(self, commit: Commit) -> None:
        self._advance(commit.revision)
        for subscriber in self._subscribers:
            if commit.revision > subscriber.after:
                subscriber.queue.put_nowait(commit)

    async def _drain(self, subscriber: _Subscriber) -> AsyncIterator[Commit | FeedGap]:
        try:
            while True:
                item = await subscriber.queue.get()
                if item is _CLOSED:
                    return
                assert isinstance(item, Commit | FeedGap)
                yield item
        finally:
            self._subscribers.remove(subscriber)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started is not None:
            self._started.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_FAILURES):
                await self._started
        while self._tasks:
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, StoreUnavailable, *_FAILURES):
                    await task
        if self._client is not None:
            await self._client.close()
        for subscriber in self._subscribers:
            subscriber.queue.put_nowait(_CLOSED)
