// The status page: one EventSource on /v1/events, rendered without any library.
// Everything from the server is put in the page as text (textContent), never as HTML.

const KEPT_CHANGES = 20;
const guards = new Map(); // name -> GuardState (proto3 JSON)
const changes = []; // newest first
let changeCount = 0;
let resyncCount = 0;
let lastId = null;
let snapshotOpen = false; // a snapshot's parts are still coming
let source = null;
let bearer = null; // only in this tab's memory
let clockOffset = 0; // server clock minus ours, from a Date header

const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function watchUrl() {
  const query = new URLSearchParams();
  for (const guard of new URLSearchParams(location.search).getAll("guard")) {
    query.append("guard", guard);
  }
  // A new EventSource (after a refused reconnect) resumes where the last one was.
  if (lastId) query.set("last_event_id", lastId);
  const text = query.toString();
  return "/v1/events" + (text ? "?" + text : "");
}

function connect() {
  if (source) source.close();
  snapshotOpen = false;
  source = new EventSource(watchUrl());
  source.addEventListener("open", () => {
    snapshotOpen = false; // a reconnect starts over: a half-sent snapshot is sent again
    setStatus("live", "live");
  });
  source.addEventListener("snapshot", (event) => {
    const message = JSON.parse(event.data);
    lastId = event.lastEventId;
    // A snapshot of many guards comes in parts ("more" on all but the last).
    if (!snapshotOpen) guards.clear();
    snapshotOpen = Boolean(message.snapshot.more);
    for (const state of message.snapshot.guards || []) guards.set(state.guard, state);
    if (message.snapshot.resynced) resyncCount += 1;
    showRevision(message.snapshot.revision);
    render();
  });
  source.addEventListener("change", (event) => {
    const message = JSON.parse(event.data);
    lastId = event.lastEventId;
    const change = message.change;
    guards.set(change.state.guard, change.state);
    changeCount += 1;
    changes.unshift({ at: Date.now(), change });
    changes.length = Math.min(changes.length, KEPT_CHANGES);
    showRevision(change.revision);
    render();
  });
  source.addEventListener("progress", (event) => {
    lastId = event.lastEventId;
    showRevision(JSON.parse(event.data).progress.revision);
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) refused();
    else setStatus("reconnecting", "reconnecting…");
  });
}

// The server answered with an error status: credentials are missing or expired.
async function refused() {
  if (bearer && (await mint())) {
    connect();
    return;
  }
  setStatus("refused", "needs a token");
  $("login").hidden = false;
}

// Trade the bearer token for a short-lived watch cookie (HttpOnly; EventSource sends it).
async function mint() {
  const answer = await fetch("/v1/watch-tokens", {
    method: "POST",
    headers: { Authorization: "Bearer " + bearer },
  });
  if (!answer.ok) {
    const error = await answer.json().catch(() => ({ message: answer.statusText }));
    $("login-error").textContent = error.message || "refused";
    bearer = null;
    return false;
  }
  const { expiresInSeconds } = await answer.json();
  setTimeout(() => bearer && mint(), (expiresInSeconds * 1000) / 2);
  $("login").hidden = true;
  $("login-error").textContent = "";
  return true;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  bearer = $("token").value.trim();
  $("token").value = "";
  if (await mint()) connect();
});

function showRevision(revision) {
  $("revision").textContent = revision || "0";
  $("change-count").textContent = String(changeCount);
  $("resync-count").textContent = String(resyncCount);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function shortName(value, prefix) {
  return (value || "").replace(prefix, "").toLowerCase();
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function serverNow() {
  return Date.now() + clockOffset;
}

function renderHolder(run) {
  const item = element("li", "holder");
  item.dataset.operationId = run.operationId;
  item.append(element("span", "op", run.operationId));
  const countdown = element("span", "countdown");
  countdown.dataset.expiresAt = run.expiresAt;
  item.append(countdown);
  const meta = element("div", "meta");
  const started = new Date(run.startedAt);
  meta.append(`started ${started.toLocaleTimeString()}`);
  if (run.principal) meta.append(` · by ${run.principal}`);
  meta.append(` · fencing ${run.fencingToken || 0} `);
  for (const [key, value] of Object.entries(run.labels || {})) {
    meta.append(element("span", "label", `${key}=${value}`));
  }
  item.append(meta);
  if (run.progress) item.append(renderProgress(run.progress));
  if (run.cancelRequested) {
    const why = run.cancelReason ? `: ${run.cancelReason}` : "";
    item.append(element("div", "cancel-requested", `cancel requested${why}; still running`));
  } else {
    // Cancel asks the holder to stop; the slot frees only when it has (admin or its owner).
    const button = element("button", "cancel", "Cancel");
    button.type = "button";
    button.addEventListener("click", () => cancelRun(run, button));
    item.append(button);
  }
  return item;
}

function renderProgress(progress) {
  const box = element("div", "progress");
  if (progress.fraction !== undefined) {
    const bar = element("progress");
    bar.max = 1;
    bar.value = progress.fraction;
    box.append(bar, element("span", "percent", `${Math.round(progress.fraction * 100)}%`));
  }
  if (progress.message) box.append(element("span", "message", progress.message));
  return box;
}

async function cancelRun(run, button) {
  button.disabled = true;
  const headers = { "Content-Type": "application/json", "Connect-Protocol-Version": "1" };
  if (bearer) headers.Authorization = "Bearer " + bearer;
  const body = { guard: run.guard, operationId: run.operationId, reason: "cancelled on the status page" };
  let message = "";
  try {
    const answer = await fetch("/runguard.v1.RunGuardService/Cancel", {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
    if (!answer.ok) {
      const error = await answer.json().catch(() => ({ message: answer.statusText }));
      message = error.message || error.code || "refused";
    }
  } catch (error) {
    message = String(error);
  }
  $("action-error").textContent = message ? `cancel of ${run.operationId}: ${message}` : "";
  button.disabled = false;
}

function renderGuard(state) {
  const card = element("article", "guard");
  card.dataset.guard = state.guard;
  const holders = state.holders || [];
  const capacity = state.capacity || 1;
  const title = element("h3", "", state.guard);
  const badge = element(
    "span",
    holders.length >= capacity ? "badge full" : "badge free",
    `${holders.length}/${capacity} held · ${state.queueLength || 0} queued`,
  );
  badge.dataset.held = String(holders.length);
  badge.dataset.queued = String(state.queueLength || 0);
  title.append(badge);
  card.append(title);
  const list = element("ul", "holders");
  for (const run of holders) list.append(renderHolder(run));
  card.append(list);
  return card;
}

function renderChange({ at, change }) {
  const kind = shortName(change.kind, "CHANGE_KIND_");
  const reason = change.releaseReason ? ` (${shortName(change.releaseReason, "RELEASE_REASON_")})` : "";
  const item = element("li", `kind-${kind}`);
  const operation = change.run ? ` ${change.run.operationId}` : ""; // CONFIGURED has no run
  item.textContent = `${new Date(at).toLocaleTimeString()} ${change.state.guard} ${kind}${reason}${operation}`;
  return item;
}

function render() {
  const section = $("guards");
  const cards = [...guards.values()]
    .sort((a, b) => a.guard.localeCompare(b.guard))
    .map(renderGuard);
  section.replaceChildren(...cards);
  if (!cards.length) section.append(element("p", "empty", "No guard is in use yet."));
  $("changes").replaceChildren(...changes.map(renderChange));
  if (!changes.length) $("changes").append(element("li", "empty", "none since this page opened"));
  tick();
}

function tick() {
  for (const node of document.querySelectorAll(".countdown")) {
    const left = (Date.parse(node.dataset.expiresAt) - serverNow()) / 1000;
    node.textContent = left > 0 ? `expires in ${duration(left)}` : "lease due";
  }
}

async function syncClock() {
  try {
    const answer = await fetch("/v1/healthz", { cache: "no-store" });
    const date = Date.parse(answer.headers.get("date") || "");
    // A Date header has whole seconds: only a clock that is clearly off is corrected.
    if (!Number.isNaN(date) && Math.abs(date - Date.now()) > 2000) clockOffset = date - Date.now();
  } catch {
    // Keep our own clock: only the countdowns depend on it.
  }
}

setInterval(tick, 1000);
syncClock();
connect();
