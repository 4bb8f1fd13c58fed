/* Load-test charts, shared by the dashboard's run page and the offline HTML report:
   draw(doc) fills the canvases #lt-latency, #lt-percentiles and #lt-phases from a
   run document (probes/loadtest/reports.py: document). Needs only Chart.js. */
(function () {
  "use strict";
  const COLORS = { e2e: "#2563eb", ttft: "#0f766e", itl: "#d97706", tpot: "#7c3aed", failed: "#b91c1c" };
  const ORDER = ["p50", "p90", "p95", "p99", "p99.9"];
  const charts = [];

  function ms(v) {
    if (v === null || v === undefined) return "–";
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
  }

  function chart(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return;
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } }, config.options || {});
    charts.push(new window.Chart(canvas, config));
  }

  function latencyOverTime(samples) {
    const ok = samples.filter((s) => s.outcome === "ok");
    const failed = samples.filter((s) => s.outcome !== "ok");
    const points = (rows, key) => rows.filter((s) => s[key] !== null).map((s) => ({ x: s.at, y: s[key] }));
    chart("lt-latency", {
      type: "scatter",
      data: { datasets: [
        { label: "end to end", data: points(ok, "e2e"), backgroundColor: COLORS.e2e, pointRadius: 2 },
        { label: "time to first token", data: points(ok, "ttft"), backgroundColor: COLORS.ttft, pointRadius: 2 },
        { label: "failed", data: points(failed, "e2e"), backgroundColor: COLORS.failed, pointRadius: 3 },
      ] },
      options: { scales: { x: { title: { display: true, text: "seconds into the run" } },
        y: { beginAtZero: true, ticks: { callback: ms } } } },
    });
  }

  function percentiles(summary) {
    const metric = (name, label) => ({ label, backgroundColor: COLORS[name],
      data: ORDER.map((q) => (summary[name] || {})[q]) });
    chart("lt-percentiles", {
      type: "bar",
      data: { labels: ORDER, datasets: [metric("ttft", "TTFT"), metric("e2e", "end to end"), metric("itl", "ITL"),
        metric("tpot", "TPOT")] },
      options: { scales: { y: { beginAtZero: true, ticks: { callback: ms } } } },
    });
  }

  function phases(rows) {
    chart("lt-phases", {
      type: "bar",
      data: { labels: rows.map((p) => p.label), datasets: [
        { label: "requests/s", data: rows.map((p) => p.rps), backgroundColor: COLORS.tpot, yAxisID: "y" },
        { label: "p95 end to end", data: rows.map((p) => (p.e2e || {}).p95), backgroundColor: COLORS.e2e, yAxisID: "ms" },
      ] },
      options: { scales: { y: { beginAtZero: true, position: "left" },
        ms: { beginAtZero: true, position: "right", ticks: { callback: ms }, grid: { drawOnChartArea: false } } } },
    });
  }

  function draw(doc) {
    while (charts.length) charts.pop().destroy();
    const result = doc.result || {};
    latencyOverTime(result.samples || []);
    percentiles(result.summary || {});
    phases(result.phases || []);
  }

  window.WeathervaneLoadTestCharts = { draw, ms };
})();
