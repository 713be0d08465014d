// Every value is set as text, never as markup: pin names come from whoever
// pinned, verdict reasons from validators.
const mib = b => (b / 1048576).toFixed(1) + " MiB";
const short = s => String(s).slice(0, 12);
// A table row of text cells; the first `th` cells are headers.
function row(cells, th, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  cells.forEach((c, i) => {
    const cell = document.createElement(i < th ? "th" : "td");
    cell.textContent = String(c);
    tr.appendChild(cell);
  });
  return tr;
}
function fill(id, rows) {
  document.getElementById(id).replaceChildren(...rows);
}
// How long before `now_ms` (the node's clock, not the browser's).
function ago(ms, now_ms) {
  const s = Math.max(0, Math.round((now_ms - ms) / 1000));
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}
// Samples of used bytes and memory while the page is open, drawn as two
// polylines (numbers only, so nothing to escape).
const history = [];
function chart(i) {
  history.push([i.store.used_bytes, i.rss_bytes]);
  if (history.length > 120) history.shift();
  const svg = document.getElementById("chart");
  const w = 480, h = 80, ns = "http://www.w3.org/2000/svg";
  const lines = [[0, "#2a6"], [1, "#c62"]].map(([k, color]) => {
    const max = Math.max(1, ...history.map(s => s[k]));
    const pts = history.map((s, j) =>
      (j * w / 119).toFixed(1) + "," + (h - 2 - (s[k] / max) * (h - 4)).toFixed(1)).join(" ");
    const p = document.createElementNS(ns, "polyline");
    p.setAttribute("points", pts);
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", color);
    return p;
  });
  svg.replaceChildren(...lines);
}
async function verdicts() {
  const v = await (await fetch("/api/verdicts")).json();
  document.getElementById("judged").classList.remove("hidden");
  fill("standing", [row(["validator", "score", "weight", "audits", "passed", "failed",
    "silent", "shards", "verified", "state", "last ask"], 11)]
    .concat(v.validators.map(x => row([short(x.validator), x.score.toFixed(3), x.weight,
      x.audits, x.passes, x.failures, x.timeouts, x.shards_assigned, mib(x.verified_bytes),
      x.disqualified ? "disqualified" : x.contained ? "re-asking" : x.vetted ? "vetted" : "vetting",
      x.error ? "failed: " + x.error : "ok"], 0))));
  const rows = [];
  v.validators.forEach(x => x.verdicts.forEach(d => rows.push([d.at_ms, row([short(x.validator),
    ago(d.at_ms, v.asked_at * 1000), d.outcome, d.latency_ms == null ? "-" : d.latency_ms + " ms",
    d.deadline_ms + " ms", short(d.shard), d.reason, d.advice], 0,
    d.outcome == "pass" ? "" : "fail")])));
  rows.sort((a, b) => b[0] - a[0]);
  fill("verdicts", [row(["validator", "when", "outcome", "latency", "deadline", "shard",
    "why", "what to do"], 8)].concat(rows.slice(0, 50).map(r => r[1])));
}
async function scores() {
  const r = await (await fetch("/api/scores")).json();
  document.getElementById("scoring").classList.remove("hidden");
  fill("summary", [["datasets audited", r.datasets], ["challenges scored", r.challenges],
    ["repairs done / pending / failed", r.repairs_done + " / " + r.repairs_pending + " / " + r.repairs_failed]]
    .map(x => row(x, 1)));
  fill("scores", [row(["miner", "hotkey", "score", "weight", "audits", "passed", "failed",
    "silent", "shards", "verified", "deadline", "state", "last failure"], 13)]
    .concat(r.miners.map(m => row([short(m.node_id), short(m.hotkey), m.score.toFixed(3),
      m.weight, m.audits, m.passes, m.failures, m.timeouts, m.shards_assigned,
      mib(m.verified_bytes), m.deadline_ms + " ms",
      m.disqualified ? "disqualified" : m.contained ? "re-asking" : "ok",
      m.last_failures.length ? m.last_failures[m.last_failures.length - 1] : ""], 0,
      m.disqualified || m.contained ? "fail" : ""))));
}
// The registry's (or chain's) view of this node.
function chainRows(c) {
  if (!c) return [];
  const state = c.error ? "cannot read: " + c.error
    : !c.registered ? "not registered"
    : c.addresses_match ? "registered; published addresses match" : "registered; published addresses differ";
  const out = [["registry", c.kind + ": " + state]];
  if (c.last_block != null) out.push(["last block seen", "#" + c.last_block + " (" + c.last_read_secs + " s ago)"]);
  if (c.kind == "subtensor") out.push(["chain call errors", c.chain_errors]);
  if (c.advice) out.push(["what to do", c.advice]);
  return out;
}
function problems(i) {
  document.getElementById("troubles").classList.toggle("hidden", i.problems.length == 0);
  fill("problems", [row(["when", "level", "times", "what", "what to do"], 5)]
    .concat(i.problems.map(p => row([ago(p.last_ms, i.now_ms), p.level, p.count,
      p.message + (p.fields ? " (" + p.fields + ")" : ""), p.advice], 0, "fail"))));
}
// Who is connected: peers that opened a connection here, then those this
// node dialed.
function peers(i) {
  const n = i.network || {incoming: [], peers: []};
  const rows = (n.incoming || []).map(p => row([short(p.node_id), p.role, "in", p.path,
    p.rtt_ms == null ? "-" : p.rtt_ms.toFixed(1) + " ms"], 0))
    .concat((n.peers || []).map(p => row([short(p.node_id), "", "out", p.path,
      p.rtt_ms.toFixed(1) + " ms"], 0)));
  document.getElementById("talking").classList.toggle("hidden", rows.length == 0);
  fill("peers", [row(["peer", "role", "direction", "path", "round trip"], 5)].concat(rows));
}
// Where shards are kept, when there is more than the data directory.
function volumes(i) {
  const v = i.volumes || [];
  document.getElementById("disks").classList.toggle("hidden", v.length < 2);
  fill("volumes", [row(["volume", "path", "state", "used", "capacity", "free on disk"], 6)]
    .concat(v.map(x => row([x.index == 0 ? "data dir" : x.index, x.path,
      !x.present ? "MISSING: its shards are reported lost; mount the disk again"
        : x.configured ? "present" : "present (no longer configured: read only)",
      mib(x.used_bytes), mib(x.capacity), x.present ? mib(x.fs_available) : "-"], 0,
      x.present ? "" : "fail"))));
}
// A transfer's progress as a <progress> element and text beside it.
function progressRow(t) {
  const tr = row([t.kind, t.what, "", mib(t.done) + (t.total == null ? "" : " of " + mib(t.total)),
    t.secs > 0 ? mib(t.done / t.secs) + "/s" : "-"], 0);
  if (t.total) {
    const bar = document.createElement("progress");
    bar.max = t.total;
    bar.value = t.done;
    tr.children[2].appendChild(bar);
  }
  return tr;
}
async function transfers() {
  const t = await (await fetch("/api/transfers")).json();
  document.getElementById("moving").classList.toggle("hidden", t.length == 0);
  fill("transfers", [row(["kind", "what", "progress", "bytes", "rate"], 5)].concat(t.map(progressRow)));
}
async function miners() {
  const m = await (await fetch("/api/miners")).json();
  document.getElementById("seen").classList.remove("hidden");
  fill("miners", [row(["miner", "hotkey", "addresses", "state", "path", "round trip"], 6)]
    .concat(m.map(x => row([short(x.node_id), short(x.hotkey), x.addrs.join(" "),
      x.suspect ? "failed lately" : "ok", x.path || "not connected",
      x.rtt_ms == null ? "-" : x.rtt_ms.toFixed(1) + " ms"], 0, x.suspect ? "fail" : ""))));
}
async function refresh() {
  const i = await (await fetch("/api/info")).json();
  fill("info", [["node id", i.node_id], ["hotkey", i.hotkey], ["role", i.role],
    ["version", i.version], ["uptime", i.uptime_secs + " s"], ["memory", mib(i.rss_bytes)],
    ["used", mib(i.store.used_bytes) + " of " + mib(i.store.capacity)], ["shards", i.store.shard_count],
    ["reconcile", i.store.reconcile_done ? "done" : "running"],
    ["scrubbed / corrupt", i.store.scrubbed + " / " + i.store.corrupt_found]]
    .concat(i.network ? [["reachability", i.network.reachability + ": " + i.network.advice],
      ["bytes in / out", mib(i.network.bytes_in) + " / " + mib(i.network.bytes_out)]] : [])
    .concat(i.cache ? [["edge cache", mib(i.cache.bytes) + " of " + mib(i.cache.budget) + ", hit ratio " +
      (i.cache.hits + i.cache.misses ? (100 * i.cache.hits / (i.cache.hits + i.cache.misses)).toFixed(1) + "%" : "-")]] : [])
    .concat(chainRows(i.chain))
    .map(r => row(r, 1)));
  problems(i);
  volumes(i);
  peers(i);
  chart(i);
  if (i.role == "miner") await verdicts();
  if (i.role == "validator") await scores();
  if (i.role != "miner") await miners();
  await transfers();
  const p = await (await fetch("/api/pins")).json();
  fill("pins", [row(["name", "CID", "size", "files"], 4)]
    .concat(p.map(x => row([x.name, x.cid, mib(x.bytes), x.files], 0))));
}
refresh(); setInterval(refresh, 5000);
