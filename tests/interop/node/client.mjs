// A Node.js client of RunGuard, built only from the contract: @grpc/grpc-js with
// @grpc/proto-loader loading protos/runguard/v1/runguard.proto at run time.
//
// Usage:
//   node client.mjs ADDRESS
//       Runs the scenario on a fresh guard: Begin granted, a second Begin
//       rejected IN_FLIGHT, a Watch opened before End that sees RELEASED
//       (ENDED), End ENDED, End again ALREADY_ENDED.
//   node client.mjs ADDRESS begin GUARD ROUTE PAYLOAD_JSON
//       One Begin of PAYLOAD_JSON (any JSON text) on GUARD and ROUTE.
//   node client.mjs ADDRESS life GUARD
//       A run's life on GUARD: progress reported with KeepAlive and seen by a
//       Watch as PROGRESSED, a Cancel seen as CANCEL_REQUESTED and in KeepAlive's
//       response, End with outcome CANCELLED and a result, a DUPLICATE pointing
//       at the ended run, GetRun of it, and End of a run never held (UNKNOWN).
//
// Prints one JSON object per line per step and exits 0; on any failure it
// prints {"step": "error", ...} on stderr and exits 1.

import { createHash, randomUUID } from "node:crypto";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = dirname(fileURLToPath(import.meta.url));
const PROTOS = resolve(HERE, "..", "..", "..", "protos");
const DEADLINE_MS = 10_000;

// google/protobuf/{duration,struct,timestamp}.proto are bundled with protobufjs,
// so the contract's directory is the only include dir needed.
const definition = protoLoader.loadSync("runguard/v1/runguard.proto", {
  includeDirs: [PROTOS],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { RunGuardService } = grpc.loadPackageDefinition(definition).runguard.v1;

function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function deadline() {
  return { deadline: new Date(Date.now() + DEADLINE_MS) };
}

function unary(client, method, request) {
  return new Promise((resolvePromise, reject) => {
    client[method](request, deadline(), (error, response) => {
      if (error) reject(error);
      else resolvePromise(response);
    });
  });
}

// Encodes a plain JSON value as a google.protobuf.Value message.
function toValue(json) {
  if (json === null) return { nullValue: "NULL_VALUE" };
  if (Array.isArray(json)) return { listValue: { values: json.map(toValue) } };
  switch (typeof json) {
    case "number":
      return { numberValue: json };
    case "string":
      return { stringValue: json };
    case "boolean":
      return { boolValue: json };
    case "object":
      return {
        structValue: {
          fields: Object.fromEntries(Object.entries(json).map(([k, v]) => [k, toValue(v)])),
        },
      };
    default:
      throw new TypeError(`not a JSON value: ${typeof json}`);
  }
}

// Decodes a google.protobuf.Value message back into plain JSON.
function fromValue(value) {
  switch (value.kind) {
    case "nullValue":
      return null;
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "listValue":
      return (value.listValue.values ?? []).map(fromValue);
    case "structValue":
      return Object.fromEntries(
        Object.entries(value.structValue.fields ?? {}).map(([k, v]) => [k, fromValue(v)]),
      );
    default:
      return undefined;
  }
}

// RFC 8785 canonical JSON: sorted keys (UTF-16 order) over JSON.stringify,
// whose number and string forms are the RFC's.
function canonical(json) {
  if (json === null || typeof json !== "object") return JSON.stringify(json);
  if (Array.isArray(json)) return `[${json.map(canonical).join(",")}]`;
  const keys = Object.keys(json).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(json[k])}`).join(",")}}`;
}

// The fingerprint the contract defines for a payload submission (Run.fingerprint).
function payloadFingerprint(route, payload) {
  const text = canonical(["payload", route, payload]);
  return createHash("sha256").update(text, "utf8").digest("hex").slice(0, 32);
}

// One line describing a BeginResponse, read from its typed `outcome` oneof.
function outcomeLine(step, response) {
  if (response.outcome === "granted") {
    const { run, lease_token: leaseToken } = response.granted;
    return {
      step,
      outcome: "granted",
      guard: run.guard,
      operation_id: run.operation_id,
      fingerprint: run.fingerprint,
      fencing_token: run.fencing_token,
      has_lease_token: leaseToken.length > 0,
    };
  }
  if (response.outcome === "rejected") {
    const { reason, holders, duplicate_of: duplicateOf } = response.rejected;
    return {
      step,
      outcome: "rejected",
      reason,
      holders: holders.map((run) => run.operation_id),
      duplicate_of: duplicateOf
        ? { operation_id: duplicateOf.operation_id, fingerprint: duplicateOf.fingerprint }
        : null,
    };
  }
  throw new Error(`Begin returned no outcome: ${JSON.stringify(response)}`);
}

// Opens a Watch of one guard. `snapshot` settles with the first message (the
// stream is subscribed from then on); `released` with the first RELEASED change.
function watch(client, guard) {
  const call = client.Watch({ guards: [guard] }, deadline());
  let onSnapshot;
  let onReleased;
  const snapshot = new Promise((ok, fail) => {
    onSnapshot = ok;
    call.on("error", fail);
  });
  const released = new Promise((ok, fail) => {
    onReleased = ok;
    call.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) fail(error);
    });
  });
  const kinds = [];
  call.on("data", (message) => {
    if (message.event === "snapshot") {
      kinds.push("SNAPSHOT");
      onSnapshot(message.snapshot);
    } else if (message.event === "change") {
      const change = message.change;
      kinds.push(change.kind);
      if (change.kind === "CHANGE_KIND_RELEASED") onReleased({ change, kinds: [...kinds] });
    }
  });
  return { call, snapshot, released };
}

async function scenario(client) {
  const guard = `node-${randomUUID()}`;
  const route = "/interop/node";

  const first = await unary(client, "Begin", {
    guard,
    operation_id: "node-holder",
    route,
    payload: toValue({ job: 1 }),
  });
  print(outcomeLine("begin", first));
  const leaseToken = first.granted.lease_token;

  const second = await unary(client, "Begin", { guard, route, payload: toValue({ job: 2 }) });
  print(outcomeLine("second_begin", second));

  const watcher = watch(client, guard);
  const snapshot = await watcher.snapshot;
  print({
    step: "watch_snapshot",
    guards: snapshot.guards.map((state) => ({
      guard: state.guard,
      holders: state.holders.map((run) => run.operation_id),
    })),
  });

  const ended = await unary(client, "End", {
    guard,
    operation_id: "node-holder",
    lease_token: leaseToken,
  });
  print({ step: "end", result: ended.result });

  const { change, kinds } = await watcher.released;
  print({
    step: "watch_released",
    kind: change.kind,
    release_reason: change.release_reason,
    operation_id: change.run.operation_id,
    holders_after: change.state.holders.map((run) => run.operation_id),
    seen: kinds,
  });
  watcher.call.cancel();

  const again = await unary(client, "End", {
    guard,
    operation_id: "node-holder",
    lease_token: leaseToken,
  });
  print({ step: "end_again", result: again.result });
}

// Opens a Watch of one guard; `until(kind)` settles with the first change of that kind.
function changes(client, guard) {
  const call = client.Watch({ guards: [guard] }, deadline());
  const seen = [];
  const waiting = [];
  let opened;
  const snapshot = new Promise((ok) => {
    opened = ok;
  });
  call.on("error", (error) => {
    if (error.code !== grpc.status.CANCELLED) for (const w of waiting) w.fail(error);
  });
  call.on("data", (message) => {
    if (message.event === "snapshot") opened(message.snapshot);
    if (message.event !== "change") return;
    seen.push(message.change);
    for (const w of waiting.filter((w) => w.kind === message.change.kind)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.ok(message.change);
    }
  });
  function until(kind) {
    const found = seen.find((change) => change.kind === kind);
    if (found) return Promise.resolve(found);
    return new Promise((ok, fail) => waiting.push({ kind, ok, fail }));
  }
  return { call, snapshot, until };
}

function runLine(run) {
  return {
    operation_id: run.operation_id,
    state: run.state,
    end_reason: run.end_reason,
    outcome: run.outcome,
    result: run.result ? fromValue(run.result) : null,
    has_ended_at: Boolean(run.ended_at),
    progress: run.progress
      ? { fraction: run.progress.fraction ?? null, message: run.progress.message }
      : null,
    cancel_requested: run.cancel_requested,
    cancel_reason: run.cancel_reason,
  };
}

async function life(client, guard) {
  const route = "/interop/life";
  const payload = toValue({ job: "life" });
  const begun = await unary(client, "Begin", { guard, operation_id: "node-job", route, payload });
  const token = begun.granted.lease_token;
  const held = { guard, operation_id: "node-job", lease_token: token };
  const watcher = changes(client, guard);
  await watcher.snapshot;

  await unary(client, "KeepAlive", { ...held, progress: { fraction: 0.5, message: "half" } });
  const progressed = await watcher.until("CHANGE_KIND_PROGRESSED");
  print({ step: "progressed", run: runLine(progressed.run) });

  const cancelled = await unary(client, "Cancel", { guard, operation_id: "node-job", reason: "stop" });
  const requested = await watcher.until("CHANGE_KIND_CANCEL_REQUESTED");
  const renewed = await unary(client, "KeepAlive", held);
  print({
    step: "cancel",
    result: cancelled.result,
    change_holders: requested.state.holders.map((run) => run.operation_id),
    keep_alive_cancel_requested: renewed.cancel_requested,
  });

  const ended = await unary(client, "End", {
    ...held,
    outcome: "RUN_OUTCOME_CANCELLED",
    result: toValue({ frames: 3 }),
  });
  const released = await watcher.until("CHANGE_KIND_RELEASED");
  print({ step: "end", result: ended.result, released: runLine(released.run) });
  watcher.call.cancel();

  const again = await unary(client, "Begin", { guard, route, payload });
  print({
    step: "duplicate",
    reason: again.rejected.reason,
    duplicate_of: runLine(again.rejected.duplicate_of),
  });
  const got = await unary(client, "GetRun", { guard, operation_id: "node-job" });
  print({ step: "get_run", run: runLine(got.run) });
  const unknown = await unary(client, "End", { guard, operation_id: "never-held", lease_token: "x" });
  print({ step: "end_unknown", result: unknown.result });
}

async function beginOnce(client, guard, route, payloadText) {
  const payload = JSON.parse(payloadText);
  const response = await unary(client, "Begin", { guard, route, payload: toValue(payload) });
  print({ ...outcomeLine("begin", response), local_fingerprint: payloadFingerprint(route, payload) });
}

async function main(argv) {
  const [address, command, ...rest] = argv;
  if (!address) throw new Error("usage: node client.mjs ADDRESS [begin GUARD ROUTE PAYLOAD_JSON]");
  const client = new RunGuardService(address, grpc.credentials.createInsecure());
  try {
    if (command === undefined) await scenario(client);
    else if (command === "begin" && rest.length === 3) await beginOnce(client, ...rest);
    else if (command === "life" && rest.length === 1) await life(client, ...rest);
    else throw new Error(`unknown command: ${[command, ...rest].join(" ")}`);
  } finally {
    client.close();
  }
}

try {
  await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(
    `${JSON.stringify({ step: "error", message: String(error?.message ?? error), code: error?.code ?? null })}\n`,
  );
  process.exitCode = 1;
}
