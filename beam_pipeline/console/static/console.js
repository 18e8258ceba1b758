// The console's page: /api/snapshot every second, fraud alerts pushed on /api/alerts
// (server-sent events). Every value goes into the page as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 0) =>
  v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });
const ms = (v) => (v === null || v === undefined ? "–" : `${fmt(v, v < 10 ? 1 : 0)} ms`);

function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== value) el.textContent = value;
}

function chart(id, title, series) {
  const el = $(id);
  const opts = {
    title,
    width: Math.max(el.clientWidth - 24, 300),
    height: 160,
    scales: { x: { time: true } },
    axes: [
      { stroke: "#8a96a3", grid: { stroke: "#2a323c" } },
      { stroke: "#8a96a3", grid: { stroke: "#2a323c" }, size: 64 },
    ],
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: true }))],
  };
  const plot = new uPlot(opts, [[], ...series.map(() => [])], el);
  window.addEventListener("resize", () => plot.setSize({ width: Math.max(el.clientWidth - 24, 300), height: 160 }));
  return plot;
}

const charts = {
  throughput: chart("chart-throughput", "payments /s", [["in", "#58a6ff"], ["stored", "#3fb950"], ["dead-lettered", "#f85149"]]),
  latency: chart("chart-latency", "alert latency (ms)", [["p50", "#d2a8ff"], ["p99", "#f0883e"]]),
  lag: chart("chart-lag", "consumer lag (messages)", [["lag", "#d29922"]]),
};

function rows(tbodyId, pairs) {
  const body = $(tbodyId);
  const fresh = document.createElement("tbody");
  fresh.id = tbodyId;
  for (const [a, b] of pairs) {
    const tr = document.createElement("tr");
    for (const v of [a, b]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function render(s) {
  const now = s.now;
  text("rate-in", fmt(now.in, 1));
  text("rate-stored", fmt(now.stored, 1));
  text("rate-dead", fmt(now.dead, 1));
  text("latency-p50", ms(now.p50));
  text("latency-p99", ms(now.p99));
  text("total-in", `${fmt(s.totals.in)} read`);
  text("total-stored", `${fmt(s.totals.stored)} stored`);
  text("total-dead", `${fmt(s.totals.dead)} dead letters`);
  text("total-alerts", fmt(s.totals.alerts));
  text("total-duplicates", fmt(s.totals.duplicates));
  const lag = s.lag.messages.length ? s.lag.messages[s.lag.messages.length - 1] : null;
  text("lag", fmt(lag));
  charts.throughput.setData([s.series.t, s.series.in, s.series.stored, s.series.dead]);
  charts.latency.setData([s.series.t, s.series.p50, s.series.p99]);
  charts.lag.setData([s.lag.t, s.lag.messages]);
  rows("top-accounts", s.top_accounts.map((a) => [a.account_id, fmt(a.alerts)]));
  rows("dead-letters", Object.entries(s.dead_letters).map(([reason, n]) => [reason, fmt(n)]));
  for (const part of ["kafka", "runner", "redis", "warehouse"]) {
    const h = s.health[part] || { state: "unknown", detail: "" };
    const card = $(`health-${part}`);
    card.className = `card health ${h.state}`;
    card.querySelector(".state").textContent = h.state;
    card.querySelector(".detail").textContent = h.detail;
  }
  text("updated", `updated ${new Date(s.at * 1000).toLocaleTimeString()}`);
}

async function poll() {
  try {
    const response = await fetch("/api/snapshot", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    text("updated", `console server unreachable (${err.message}); retrying`);
  }
  setTimeout(poll, 1000);
}

const seen = new Set();
function addAlert(a) {
  if (seen.has(a.alert_id)) return;
  seen.add(a.alert_id);
  const li = document.createElement("li");
  li.className = "fresh";
  li.dataset.alertId = a.alert_id;
  const account = document.createElement("span");
  account.className = "account";
  account.textContent = a.account_id;
  const what = document.createElement("span");
  what.textContent = ` ${a.rule} (${a.matched_count} payments) `;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = a.detected_at || "";
  li.append(account, what, when);
  const list = $("alerts");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

const feed = new EventSource("/api/alerts");
feed.onmessage = (event) => addAlert(JSON.parse(event.data));

poll();
