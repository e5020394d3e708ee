"""The fleet as a small live web page: ``splitedge fleet --web-port P``.

Two paths on one stdlib HTTP server (:mod:`cloud_tail.httpd`):

* ``/`` — one self-contained HTML page (inline CSS and JavaScript; no CDN, no build step) that
  fetches ``fleet.json`` every second and draws one row per device: online/stale, cut and bit width,
  bandwidth estimate and uplink, frames (captured, and answered by the cloud), the answered-by mix
  (device vs cloud, as a bar), latency p50/p95, the bundle it runs (id, version, a rollout in progress
  or rolled back), and when it was last heard of;
* ``/fleet.json`` — :meth:`cloud_tail.fleet.FleetView.to_dict`, the same JSON ``splitedge fleet --json``
  prints.

The page builds its rows with ``textContent`` only (a device id is never parsed as HTML), and keeps
the last good table when a fetch fails (the banner says so).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from cloud_tail.httpd import serve

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from cloud_tail.fleet import FleetView

__all__ = ["page", "serve_fleet_page"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>splitedge fleet</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2430; background: #f7f8fa; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #status { color: #5a6270; margin-bottom: 1em; }
  #status.bad { color: #b00020; font-weight: 600; }
  table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 3px #0002; }
  th, td { padding: .4em .55em; text-align: right; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
  th { background: #eef1f5; font-weight: 600; }
  th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
  tr.offline td { color: #8a919c; }
  .badge { display: inline-block; padding: 0 .5em; border-radius: .7em; font-size: .85em; color: #fff; }
  .on { background: #2e7d32; } .off { background: #b00020; } .unknown { background: #8a919c; }
  .stale { background: #e08e0b; }
  .mix { display: inline-flex; width: 6em; height: .9em; background: #e3e6eb; vertical-align: middle; }
  .mix .cloud { background: #3867d6; } .mix .device { background: #20bf6b; }
  .legend span { margin-right: 1.2em; } .legend i { display: inline-block; width: .8em; height: .8em; }
  #empty { padding: 1em; color: #5a6270; }
</style>
</head>
<body>
<h1>splitedge fleet</h1>
<div id="status">__TITLE__ &middot; loading&hellip;</div>
<table>
  <thead><tr>
    <th>device</th><th>status</th><th>cut</th><th>bandwidth est.</th><th>uplink</th><th>fps</th>
    <th>frames</th><th>by cloud</th><th>answered by</th><th>latency p50 / p95</th><th>bundle</th><th>last seen</th>
  </tr></thead>
  <tbody id="devices"></tbody>
</table>
<div id="empty">no device seen yet</div>
<p class="legend"><span><i style="background:#20bf6b"></i> device (exit or whole model)</span>
<span><i style="background:#3867d6"></i> cloud (tail worker)</span></p>
<script>
"use strict";
const TITLE = __TITLE_JSON__;
function rate(b) {
  if (b === null || b === undefined) return "-";
  if (b >= 1e6) return (b / 1e6).toFixed(1) + " MB/s";
  if (b >= 1e3) return (b / 1e3).toFixed(1) + " kB/s";
  return b.toFixed(0) + " B/s";
}
function num(v, digits) { return (v === null || v === undefined) ? "-" : Number(v).toFixed(digits); }
function ago(s) {
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function badge(text, cls) {
  const b = document.createElement("span");
  b.className = "badge " + cls;
  b.textContent = text;
  return b;
}
function statusCell(d) {
  const span = document.createElement("span");
  const on = d.online === true ? ["online", "on"] : d.online === false ? ["offline", "off"] : ["?", "unknown"];
  span.appendChild(badge(on[0], on[1]));
  if (d.stale) { span.appendChild(document.createTextNode(" ")); span.appendChild(badge("stale", "stale")); }
  if (d.telemetry && d.telemetry.emulated) span.appendChild(document.createTextNode(" (emu)"));
  return span;
}
function mixCell(t) {
  const wrap = document.createElement("span");
  const bar = document.createElement("span");
  bar.className = "mix";
  const dev = Math.max(0, Math.min(1, t.exit_rate));
  for (const [cls, share] of [["device", dev], ["cloud", 1 - dev]]) {
    const part = document.createElement("span");
    part.className = cls;
    part.style.width = (share * 100).toFixed(1) + "%";
    bar.appendChild(part);
  }
  wrap.appendChild(bar);
  wrap.appendChild(document.createTextNode(" " + (100 * (1 - dev)).toFixed(0) + "% cloud"));
  return wrap;
}
function bundleCell(t) {
  const span = document.createElement("span");
  if (!t || !t.bundle_id) { span.textContent = "-"; return span; }
  const version = t.bundle_version && t.bundle_version !== t.bundle_id ? " v" + t.bundle_version : "";
  span.textContent = "0x" + t.bundle_id + version;
  if (t.rollout === "rolled_back") {
    span.appendChild(document.createTextNode(" "));
    const b = badge("rolled back", "off");
    b.title = t.rollout_detail || "";
    span.appendChild(b);
  } else if (t.rollout === "downloading") {
    span.appendChild(document.createTextNode(" "));
    span.appendChild(badge("updating", "stale"));
  }
  return span;
}
function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.device = d.device_id;
  if (d.online === false) tr.className = "offline";
  cell(tr, d.device_id);
  cell(tr, statusCell(d));
  const t = d.telemetry;
  if (t) {
    cell(tr, String(t.cut) + (t.bits === null ? "" : " \u00b7 " + t.bits + "-bit"));
    cell(tr, rate(t.bandwidth_estimate)); cell(tr, rate(t.bytes_per_s)); cell(tr, num(t.fps, 1));
  } else {
    for (let i = 0; i < 4; i++) cell(tr, "-");
  }
  cell(tr, String(d.frames)); cell(tr, String(d.cloud_frames));
  if (t) {
    cell(tr, mixCell(t)); cell(tr, num(t.p50_ms, 1) + " / " + num(t.p95_ms, 1) + " ms");
  } else {
    for (let i = 0; i < 2; i++) cell(tr, "-");
  }
  cell(tr, bundleCell(t));
  cell(tr, ago(d.age_s), d.stale ? "stale-age" : "");
  return tr;
}
async function refresh() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("fleet.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const fleet = await r.json();
    const body = document.getElementById("devices");
    body.replaceChildren(...fleet.devices.map(row));
    document.getElementById("empty").style.display = fleet.devices.length ? "none" : "block";
    const online = fleet.devices.filter(d => d.online === true).length;
    status.className = "";
    status.textContent = TITLE + " \\u00b7 " + fleet.devices.length + (fleet.devices.length === 1 ? " device, " : " devices, ") + online + " online \\u00b7 updated "
      + new Date(fleet.ts * 1000).toLocaleTimeString();
    document.body.dataset.updated = String(fleet.ts);
  } catch (e) {
    status.className = "bad";
    status.textContent = TITLE + " \\u00b7 cannot reach the fleet process (" + e.message + "); showing the last table";
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""


def page(title: str) -> str:
    """The HTML page; ``title`` (the broker URL) is escaped for HTML and for the script."""
    safe_json = json.dumps(title).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__TITLE_JSON__", safe_json).replace("__TITLE__", html.escape(title))


def serve_fleet_page(view: FleetView, port: int, *, host: str = "127.0.0.1", title: str = "") -> ThreadingHTTPServer:
    """Serve the page on ``/`` and the fleet's JSON on ``/fleet.json``; port 0 picks a free one."""
    body = page(title).encode()
    return serve(
        {
            "/": lambda: (body, "text/html; charset=utf-8"),
            "/fleet.json": lambda: (json.dumps(view.to_dict()).encode(), "application/json"),
        },
        port,
        host=host,
        flag="--web-port",
    )
