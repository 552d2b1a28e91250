// A Node.js Connect client (@connectrpc/connect-node, code from @bufbuild/protoc-gen-es)
// against RunGuard's HTTP front. Usage: node connect_client.mjs BASE_URL PROTOCOL
// (PROTOCOL: connect-json, connect-binary or grpc-web). Prints one JSON line per step.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
import {
  ChangeKind,
  RejectionReason,
  RunGuardService,
} from "./gen/runguard/v1/runguard_pb.js";

const [baseUrl, protocol] = process.argv.slice(2);
const options = { baseUrl, httpVersion: "1.1" };
const transport =
  protocol === "grpc-web"
    ? createGrpcWebTransport(options)
    : createConnectTransport({ ...options, useBinaryFormat: protocol === "connect-binary" });
const client = createClient(RunGuardService, transport);
const guard = `node-connect-${protocol}`;
const say = (step, fields) => console.log(JSON.stringify({ step, ...fields }));

const first = await client.begin({
  guard,
  operationId: "node-holder",
  route: "/generate",
  submission: { case: "payload", value: { kind: { case: "stringValue", value: "cats" } } },
});
say("begin", {
  outcome: first.outcome.case,
  operationId: first.outcome.value.run.operationId,
  hasLeaseToken: first.outcome.value.leaseToken.length > 0,
});

const second = await client.begin({ guard, operationId: "node-second", route: "/generate" });
say("second_begin", {
  outcome: second.outcome.case,
  reason: RejectionReason[second.outcome.value.reason],
  holders: second.outcome.value.holders.map((run) => run.operationId),
});

try {
  await client.end({ guard });
  say("bad_end", { error: null });
} catch (error) {
  const connectError = ConnectError.from(error);
  const [bad] = connectError.findDetails(BadRequestSchema);
  say("bad_end", {
    code: Code[connectError.code],
    fields: bad.fieldViolations.map((violation) => violation.field),
  });
}

// Leaving the loop does not end the HTTP request by itself: the signal does.
const watching = new AbortController();
for await (const message of client.watch({ guards: [guard] }, { signal: watching.signal })) {
  if (message.event.case === "snapshot") {
    say("watch_snapshot", {
      holders: message.event.value.guards.flatMap((state) => state.holders.map((r) => r.operationId)),
    });
    const ended = await client.end({
      guard,
      operationId: "node-holder",
      leaseToken: first.outcome.value.leaseToken,
    });
    say("end", { result: ended.result });
  } else if (message.event.case === "change") {
    say("watch_change", {
      kind: ChangeKind[message.event.value.kind],
      operationId: message.event.value.run.operationId,
    });
    watching.abort();
    break;
  }
}
