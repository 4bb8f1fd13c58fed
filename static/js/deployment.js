/* Deployment detail: live Chart.js charts over a chosen window, key health, recent probes. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const STATE_LABELS = { unknown: "Unknown", up: "Up", degraded: "Degraded", down: "Down" };
  const COLORS = { p50: "#2563eb", p95: "#d97706", p99: "#dc2626", probe: "#0f766e", failed: "#b91c1c", rps: "#7c3aed" };
  const MAX_PROBE_ROWS = 20;

  let data = W.initialData();
  const head = document.getElementById("deployment-head");
  const probeDots = new Map(); // "x|kind" -> {x, latency, ttft, ok}

  function dataUrl() {
    const name = data.name.split("/").map(encodeURIComponent).join("/");
    return `/dashboard-data/deployments/${name}/?window=${encodeURIComponent(data.window)}`;
  }

  function tick(value) {
    const when = new Date(value);
    return data.span_ms > 24 * 3600 * 1000 ? W.dayFormat.format(when) : W.shortFormat.format(when);
  }

  function line(label, color, extra) {
    return Object.assign({ label, data: [], borderColor: color, backgroundColor: color, borderWidth: 2,
      pointRadius: 0, pointHitRadius: 6, spanGaps: false, tension: 0.2 }, extra || {});
  }

  function dots(label, color) {
    return line(label, color, { showLine: false, pointRadius: 3, borderWidth: 1 });
  }

  function makeChart(id, datasets, format, unit) {
    return new window.Chart(document.getElementById(id), {
      type: "line",
      data: { datasets },
      options: {
        animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", ticks: { callback: tick, maxTicksLimit: 7, maxRotation: 0 } },
          y: { beginAtZero: true, ticks: { callback: W.axisTicks(unit) } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: {
            title: (items) => (items.length ? W.fullFormat.format(new Date(items[0].parsed.x)) : ""),
            label: (item) => `${item.dataset.label}: ${format(item.parsed.y)}`,
          } },
        },
      },
    });
  }

  const charts = {
    latency: makeChart("chart-latency", [line("p50", COLORS.p50), line("p95", COLORS.p95), line("p99", COLORS.p99),
      dots("probe", COLORS.probe), dots("failed probe", COLORS.failed)], W.ms, "ms"),
    ttft: makeChart("chart-ttft", [line("p50", COLORS.p50), line("p95", COLORS.p95), dots("probe", COLORS.probe)], W.ms, "ms"),
    errors: makeChart("chart-errors", [line("error rate", COLORS.failed, { fill: "origin", backgroundColor: "rgba(185,28,28,.15)" })],
      W.percent, "%"),
    rps: makeChart("chart-rps", [line("requests/s", COLORS.rps, { stepped: "before" })], W.rate, "/s"),
  };

  function xy(points, key, scale) {
    return points.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => ({ x: p.t, y: p[key] * (scale || 1) }));
  }

  function applySeries(series) {
    const latency = charts.latency.data.datasets;
    latency[0].data = xy(series, "p50_ms");
    latency[1].data = xy(series, "p95_ms");
    latency[2].data = xy(series, "p99_ms");
    charts.ttft.data.datasets[0].data = xy(series, "ttft_p50_ms");
    charts.ttft.data.datasets[1].data = xy(series, "ttft_p95_ms");
    charts.errors.data.datasets[0].data = xy(series, "error_rate", 100);
    charts.rps.data.datasets[0].data = xy(series, "rps");
    document.getElementById("no-data").hidden = series.some((p) => p.count > 0) || probeDots.size > 0;
  }

  function addProbeDot(at, latency, ttft, ok) {
    const x = Date.parse(at);
    if (!isNaN(x)) probeDots.set(x + "|" + latency, { x, latency, ttft, ok });
  }

  function drawProbeDots() {
    const since = Date.now() - data.span_ms;
    for (const [key, dot] of probeDots) if (dot.x < since) probeDots.delete(key);
    const all = [...probeDots.values()].sort((a, b) => a.x - b.x);
    const pick = (cond, field) => all.filter((d) => cond(d) && d[field] != null).map((d) => ({ x: d.x, y: d[field] }));
    charts.latency.data.datasets[3].data = pick((d) => d.ok, "latency");
    charts.latency.data.datasets[4].data = pick((d) => !d.ok, "latency");
    charts.ttft.data.datasets[2].data = pick((d) => d.ok, "ttft");
  }

  function redraw() {
    const now = Date.now();
    for (const chart of Object.values(charts)) {
      chart.options.scales.x.min = now - data.span_ms;
      chart.options.scales.x.max = now;
      chart.update("none");
    }
  }

  function setState(state, reason) {
    head.className = head.className.replace(/\bstate-\S+/g, "").trim() + " state-" + state;
    const label = head.querySelector("[data-field=state]");
    label.textContent = STATE_LABELS[state] || state;
    label.title = reason || "";
    head.querySelector("[data-field=reason]").textContent = reason || "";
  }

  function applyTotals(totals) {
    const box = document.getElementById("totals");
    const text = { count: String(totals.count), p50_ms: W.ms(totals.p50_ms), p95_ms: W.ms(totals.p95_ms),
      p99_ms: W.ms(totals.p99_ms), ttft_p50_ms: W.ms(totals.ttft_p50_ms), error_rate: W.pct(totals.error_rate),
      client_errors: String(totals.client_errors), rate_limited: String(totals.rate_limited) };
    for (const [name, value] of Object.entries(text)) box.querySelector(`[data-field="${name}"]`).textContent = value;
  }

  function probeRow(p) {
    const row = document.createElement("tr");
    row.className = p.ok ? "ok" : "bad";
    const cells = [W.timeElement(p.at), p.key || "", p.outcome + (p.status ? ` (${p.status})` : ""),
      W.ms(p.ttft_ms), W.ms(p.total_ms), W.whole(p.tps), p.error || ""];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.append(value);
      row.append(cell);
    }
    return row;
  }

  function emptyProbeRow() {
    const row = document.createElement("tr");
    row.className = "empty-row";
    const cell = document.createElement("td");
    cell.colSpan = 7;
    cell.textContent = "No probe results yet.";
    row.append(cell);
    return row;
  }

  function prependProbe(p) {
    const body = document.getElementById("probe-rows");
    body.querySelectorAll(".empty-row").forEach((r) => r.remove());
    body.prepend(probeRow(p));
    while (body.rows.length > MAX_PROBE_ROWS) body.deleteRow(body.rows.length - 1);
  }

  function keyRow(key) {
    const row = document.createElement("tr");
    row.className = "key-" + key.state;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = key.label;
    const secret = document.createElement("code");
    secret.textContent = key.masked;
    const state = document.createElement("span");
    state.className = "state key-state";
    state.textContent = key.state_label;
    const stateCell = [state];
    if (key.rate_limited_until) stateCell.push(" until ", W.timeElement(key.rate_limited_until));
    row.append(name);
    for (const value of [[secret], stateCell, [key.probe_health || "–"], [key.reason || ""]]) {
      const cell = document.createElement("td");
      cell.append(...value);
      row.append(cell);
    }
    return row;
  }

  function applyContext(context) {
    const box = document.getElementById("context-window");
    box.querySelector("[data-field=context_tokens]").textContent = context.tokens ? `${context.tokens} tokens` : "unknown";
    box.querySelector("[data-field=context_source]").textContent = context.tokens
      ? `from ${context.source_label}` : "no source says yet: never held against it";
    box.querySelector("[data-field=context_note]").textContent = context.note || "";
    document.getElementById("context-rows").replaceChildren(...context.sources.map((source) => {
      const row = document.createElement("tr");
      row.dataset.source = source.source;
      if (source.used) row.className = "used";
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = source.label + (source.used ? " (in use)" : "");
      row.append(name);
      for (const text of [source.tokens ?? "–", source.detail]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
  }

  function apply(fresh) {
    data = fresh;
    setState(fresh.state, fresh.reason);
    applyContext(fresh.context);
    applyTotals(fresh.totals);
    const keys = document.getElementById("key-rows");
    if (keys) keys.replaceChildren(...fresh.keys.map(keyRow));
    fresh.probes.forEach((p) => addProbeDot(p.at, p.total_ms, p.ttft_ms, p.ok));
    document.getElementById("probe-rows").replaceChildren(...(fresh.probes.length ? fresh.probes.map(probeRow) : [emptyProbeRow()]));
    drawProbeDots();
    applySeries(fresh.series);
    redraw();
  }

  async function refresh() {
    try {
      apply(await W.getJSON(dataUrl()));
    } catch (error) {
      console.warn("deployment refresh failed", error);
    }
  }
  let refreshSoon = W.throttle(refresh, data.refresh_s);

  function onProbe(p) {
    addProbeDot(p.at, p.latency_ms, p.ttft_ms, p.outcome === "ok");
    prependProbe({ at: p.at, key: p.api_key, outcome: p.outcome, ok: p.outcome === "ok", ttft_ms: p.ttft_ms,
      total_ms: p.latency_ms, tps: p.tps, error: p.error || "" });
    document.getElementById("no-data").hidden = true;
  }

  function onBatch(messages) {
    let touched = false;
    for (const m of messages) {
      const p = m.payload || {};
      if (p.deployment !== data.name) continue;
      touched = true;
      if (m.type === "probe.result") onProbe(p);
      else if (m.type === "health.changed" && !p.api_key) setState(p.state, p.reason);
    }
    if (!touched) return;
    drawProbeDots();
    redraw();
    refreshSoon(); // fold the new measurements into the percentile lines
  }

  function chooseWindow(event) {
    const link = event.target.closest("a[data-window]");
    if (!link) return;
    event.preventDefault();
    document.querySelectorAll("#windows a").forEach((a) => a.removeAttribute("aria-current"));
    link.setAttribute("aria-current", "true");
    data.window = link.dataset.window;
    history.replaceState(null, "", "?window=" + encodeURIComponent(data.window));
    refresh().then(() => { refreshSoon = W.throttle(refresh, data.refresh_s); });
  }

  document.getElementById("windows").addEventListener("click", chooseWindow);
  data.probes.forEach((p) => addProbeDot(p.at, p.total_ms, p.ttft_ms, p.ok));
  drawProbeDots();
  applySeries(data.series);
  redraw();
  window.setInterval(redraw, 15000); // slide the time axis even when nothing arrives
  W.connect({ onBatch, onConnect: refresh });
})();
