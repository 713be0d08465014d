// Every value is set as text, never as markup: pin names come from whoever pinned.
const mib = b => (b / 1048576).toFixed(1) + " MiB";
// A table row of text cells; the first `th` cells are headers.
function row(cells, th) {
  const tr = document.createElement("tr");
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
async function refresh() {
  const i = await (await fetch("/api/info")).json();
  fill("info", [["node id", i.node_id], ["hotkey", i.hotkey], ["role", i.role],
    ["version", i.version], ["uptime", i.uptime_secs + " s"], ["memory", mib(i.rss_bytes)],
    ["used", mib(i.store.used_bytes) + " of " + mib(i.store.capacity)], ["shards", i.store.shard_count],
    ["reconcile", i.store.reconcile_done ? "done" : "running"],
    ["scrubbed / corrupt", i.store.scrubbed + " / " + i.store.corrupt_found]]
    .map(r => row(r, 1)));
  const p = await (await fetch("/api/pins")).json();
  fill("pins", [row(["name", "CID", "size", "files"], 4)]
    .concat(p.map(x => row([x.name, x.cid, mib(x.bytes), x.files], 0))));
}
refresh(); setInterval(refresh, 5000);
