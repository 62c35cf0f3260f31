"use strict";
// The page reads GET /router/state every second (same origin, the session cookie) and redraws.
// Everything shown is set as text (never as HTML): names and messages come from configs and
// upstreams.
const POLL_MS = 1000;
// The histories' buckets are 10 s long: they are read once a bucket (most of the state's size),
// the rest every second with `?history=false`.
const HISTORY_MS = 10000;
let histories = new Map();
let historyAt = -Infinity;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (digits !== undefined) return v.toFixed(digits);
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(2);
}

function when(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

function untilText(ms, now) {
  const s = Math.max(0, Math.round((ms - now) / 1000));
  return `until ${when(ms)} (${s}s)`;
}

// A used-against-limit bar: `key` names it for tests (data-k), the value reads "used / limit".
function meter(key, label, used, limit, money) {
  const fmt = (v) => money ? (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(2)) : num(v);
  const hasLimit = limit !== null && limit !== undefined && limit > 0;
  const ratio = hasLimit ? Math.min(1, (used || 0) / limit) : 0;
  const cls = "meter" + (!hasLimit ? " none" : ratio >= 1 ? " full" : ratio >= 0.8 ? " high" : "");
  return el("td", { class: cls, "data-label": label },
    el("div", {},
      el("div", { class: "bar" }, fill(ratio)),
      el("div", { class: "val", "data-k": key }, `${fmt(used)} / ${hasLimit ? fmt(limit) : "–"}`)));
}

// The filled part of a bar (its width set through the CSS object model: the page's content
// security policy allows no inline style attributes).
function fill(ratio) {
  const span = el("span", {});
  span.style.width = `${(ratio * 100).toFixed(1)}%`;
  return span;
}

function sparkline(cls, label, values, last) {
  const w = 120, h = 18;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const present = (values || []).map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (present.length > 0) {
    const n = Math.max(1, values.length - 1);
    const max = Math.max(...present.map(([, v]) => v), 1e-9);
    const pts = present.map(([i, v]) => `${(i / n * w).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return el("div", { class: cls }, svg, `${label} ${last}`);
}

function lastOf(values) {
  for (let i = (values || []).length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function badge(d) {
  const kind = ["healthy", "cooldown", "unhealthy", "probing"].includes(d.state) ? d.state : "other";
  return el("span", { class: "badge " + kind, "data-k": "state" }, d.state || "unknown");
}

function deploymentRow(d, now) {
  const why = d.cooldown
    ? el("div", { class: "why", "data-k": "cooldown" },
        `${untilText(d.cooldown.until_ms, now)}: ${d.cooldown.class || "error"}` +
        (d.cooldown.status ? ` ${d.cooldown.status}` : "") +
        (d.cooldown.message ? ` · ${d.cooldown.message}` : ""))
    : null;
  const lat = d.latency_ms || {};
  const errors = d.errors || {};
  const h = d.history || {};
  const bucket = h.bucket_seconds || 10;
  const perSec = (h.requests || []).map((v) => v === null ? null : v / bucket);
  const budget = d.budget || {};
  return el("tr", { "data-id": d.id },
    el("td", { "data-label": "Deployment", class: "who" },
      el("div", { class: "name" }, d.model || d.id),
      el("div", { class: "sub" }, `${d.provider || ""} · ${d.api_base || "default endpoint"}`),
      el("div", { class: "sub" }, `id ${String(d.id).slice(0, 12)}`)),
    el("td", { "data-label": "State" }, badge(d), why,
      d.probe ? el("div", { class: "sub" }, "half-open probe" + (d.probe.in_flight ? " in flight" : "")) : null),
    meter("rpm", "RPM", d.rpm && d.rpm.used, d.rpm && d.rpm.limit),
    meter("tpm", "TPM", d.tpm && d.tpm.used, d.tpm && d.tpm.limit),
    meter("leases", "Leases", d.leases && d.leases.held, d.leases && d.leases.max),
    d.budget ? meter("budget", "Budget", budget.spend, budget.limit, true) : el("td", { "data-label": "Budget", class: "meter none" }, el("div", { class: "val", "data-k": "budget" }, "–")),
    el("td", { "data-label": "Latency" },
      el("div", { "data-k": "p50" }, `p50 ${num(lat.p50, 0)} ms`),
      el("div", { class: "sub", "data-k": "p99" }, `p99 ${num(lat.p99, 0)} ms`)),
    el("td", { "data-label": "Errors" },
      el("div", { "data-k": "errors" }, `${num(errors.fails)} / ${num((errors.fails || 0) + (errors.successes || 0))}`),
      el("div", { class: "sub" }, errors.rate === null || errors.rate === undefined ? "–" : `${(errors.rate * 100).toFixed(1)}%`)),
    el("td", { "data-label": "15 min" },
      el("div", { class: "spark" },
        sparkline("req", "req/s", perSec, num(lastOf(perSec), 1)),
        sparkline("err", "errors", h.errors, num(lastOf(h.errors))),
        sparkline("p99", "p99", h.p99_ms, lastOf(h.p99_ms) === null ? "–" : `${num(lastOf(h.p99_ms), 0)}ms`))));
}

function render(s) {
  const now = s.generated_at_ms || Date.now();
  const deployments = (s.groups || []).flatMap((g) => g.deployments || []);
  const cooling = deployments.filter((d) => d.state === "cooldown").length;
  const unhealthy = deployments.filter((d) => d.state === "unhealthy").length;
  const replicas = s.replicas || [];
  const mismatched = replicas.filter((r) => r.same_config === false).length;
  const tiles = [
    ["groups", "model groups", (s.groups || []).length, false],
    ["deployments", "deployments", deployments.length, false],
    ["cooldowns", "cooling down", cooling, cooling > 0],
    ["unhealthy", "unhealthy", unhealthy, unhealthy > 0],
    ["replicas", s.shared ? "replicas (shared)" : "replica (this process)", replicas.length, false],
    ["mismatched", "other config", mismatched, mismatched > 0],
  ];
  document.getElementById("summary").replaceChildren(...tiles.map(([k, label, v, alert]) =>
    el("div", { class: "tile" + (alert ? " alert" : ""), "data-tile": k }, el("b", {}, v), el("span", {}, label))));

  document.getElementById("replicas-note").textContent = s.replica ? `answered by ${s.replica}` : "";
  const rt = el("table", { class: "replicas" },
    el("thead", {}, el("tr", {}, ...[["Replica"], ["Version", "wide"], ["Config"], ["Started", "wide"], ["Last seen", "wide"], ["req/s"]]
      .map(([t, cls]) => el("th", { class: cls }, t)))),
    el("tbody", {}, ...replicas.map((r) => el("tr", { "data-replica": r.id },
      el("td", { class: "name" }, r.id + (r.id === s.replica ? " (this one)" : "")),
      el("td", { class: "wide" }, r.version || "–"),
      el("td", { class: r.same_config === false ? "cfg-bad" : "" },
        String(r.config_hash || "").slice(0, 12) + (r.same_config === false ? " · differs" : "")),
      el("td", { class: "wide" }, when(r.started_at_ms)),
      el("td", { class: "wide" }, when(r.last_seen_ms)),
      el("td", {}, num(r.requests_per_second, 1))))));
  document.getElementById("replicas").replaceChildren(replicas.length ? rt : el("div", { class: "empty" }, "no replica registered"));

  const groups = (s.groups || []).map((g) => {
    const rows = (g.deployments || []).map((d) => deploymentRow(d, now));
    const head = ["Deployment", "State", "RPM", "TPM", "Leases", "Budget", "Latency", "Errors (1 min)", "Last 15 min"];
    return el("section", { "data-group": g.model_group },
      el("h2", {}, g.model_group, el("small", {}, `${rows.length} deployment${rows.length === 1 ? "" : "s"}`)),
      el("table", { class: "deployments" },
        el("thead", {}, el("tr", {}, ...head.map((t) => el("th", {}, t)))),
        el("tbody", {}, ...rows)));
  });
  document.getElementById("groups").replaceChildren(...(groups.length ? groups : [el("div", { class: "empty" }, "no model group configured")]));
}

async function tick() {
  const live = document.getElementById("live");
  const error = document.getElementById("error");
  try {
    const withHistory = Date.now() - historyAt >= HISTORY_MS;
    const answer = await fetch(withHistory ? "/router/state" : "/router/state?history=false",
      { credentials: "same-origin", cache: "no-store" });
    if (answer.status === 401 || answer.status === 403) { window.location.assign("/ui"); return; }
    if (!answer.ok) throw new Error(`/router/state answered ${answer.status}`);
    const state = await answer.json();
    const deployments = (state.groups || []).flatMap((g) => g.deployments || []);
    if (withHistory) {
      histories = new Map(deployments.map((d) => [d.id, d.history]));
      historyAt = Date.now();
    } else {
      for (const d of deployments) d.history = histories.get(d.id) || null;
    }
    render(state);
    window.ferroliteState = state;
    document.body.dataset.generated = String(state.generated_at_ms || "");
    live.textContent = `live · ${when(state.generated_at_ms)}`;
    live.className = "live";
    error.style.display = "none";
  } catch (e) {
    live.textContent = "offline";
    live.className = "live offline";
    error.textContent = `Cannot read the routing state: ${e.message}`;
    error.style.display = "block";
  } finally {
    setTimeout(tick, POLL_MS);
  }
}
tick();
