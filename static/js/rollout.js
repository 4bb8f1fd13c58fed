/* A rollout's detail: baseline vs canary charts on the same axes and window, the verdicts, the state.
   Traffic of the rollout's route (traffic.point, batched by live.js) re-reads the page's data at most every
   refresh_s; a rollout.changed of this rollout reloads the page (its gates change), unless someone is typing a
   reason. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const ARMS = { baseline: "#2563eb", canary: "#d97706" };
  let data = W.initialData();

  function tick(value) {
    return W.shortFormat.format(new Date(value));
  }

  function line(label, color, dashed) {
    return { label, data: [], borderColor: color, backgroundColor: color, borderWidth: 2, pointRadius: 0,
      pointHitRadius: 6, spanGaps: false, tension: 0.2, borderDash: dashed ? [5, 4] : [] };
  }

  /* One dataset per arm and field; p50 lines dashed so p95 stands out. */
  function armLines(fields) {
    const sets = [];
    for (const [arm, color] of Object.entries(ARMS)) {
      for (const [field, label] of fields) sets.push(Object.assign(line(`${arm} ${label}`.trim(), color, field.includes("p50")), { arm, field }));
    }
    return sets;
  }

  function makeChart(id, fields, format, unit, max) {
    return new window.Chart(document.getElementById(id), {
      type: "line",
      data: { datasets: armLines(fields) },
      options: {
        animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", ticks: { callback: tick, maxTicksLimit: 7, maxRotation: 0 } },
          y: { beginAtZero: true, max, ticks: { callback: W.axisTicks(unit) } },
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

  const percent = W.percent;
  const charts = {
    latency: makeChart("chart-latency", [["p50_ms", "p50"], ["p95_ms", "p95"]], W.ms, "ms"),
    ttft: makeChart("chart-ttft", [["ttft_p50_ms", "p50"], ["ttft_p95_ms", "p95"]], W.ms, "ms"),
    errors: makeChart("chart-errors", [["error_rate", ""]], percent, "%"),
    share: makeChart("chart-share", [["share", ""]], percent, "%", 100),
  };
  const PERCENT_FIELDS = new Set(["error_rate", "share"]);

  function xy(points, field) {
    const scale = PERCENT_FIELDS.has(field) ? 100 : 1;
    return points.filter((p) => p[field] !== null && p[field] !== undefined).map((p) => ({ x: p.t, y: p[field] * scale }));
  }

  function drawCharts(series) {
    for (const chart of Object.values(charts)) {
      for (const set of chart.data.datasets) set.data = xy(series[set.arm], set.field);
      chart.options.scales.x.min = series.since_ms;
      chart.options.scales.x.max = series.until_ms;
      chart.update("none");
    }
  }

  function verdictItem(v) {
    const item = document.createElement("li");
    item.className = "verdict-" + v.verdict;
    item.dataset.verdict = v.verdict;
    const verdict = document.createElement("strong");
    verdict.textContent = v.verdict;
    item.append(W.timeElement(v.at), ` step ${v.step + 1}: `, verdict, " — " + v.sentence);
    return item;
  }

  function drawVerdicts(verdicts) {
    const list = document.getElementById("verdicts");
    if (!verdicts.length) return;
    list.replaceChildren(...verdicts.map(verdictItem));
  }

  function guardItem(g) {
    const item = document.createElement("li");
    item.className = "guard verdict-" + g.verdict;
    item.dataset.metric = g.metric;
    const head = document.createElement("p");
    const name = document.createElement("strong");
    name.textContent = g.label;
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = g.verdict;
    head.append(name, ": ", verdict, " — " + g.sentence);
    item.append(head);
    if (g.progress) item.append(progressPair(g.progress));
    if (g.numbers.length) item.append(numbers(g.numbers));
    return item;
  }

  function progressPair(progress) {
    const box = document.createElement("div");
    box.className = "progress-pair";
    for (const [side, words] of [["fail", "toward a rollback"], ["pass", "toward a pass"]]) {
      const label = document.createElement("label");
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = progress[side];
      bar.dataset.side = side;
      bar.textContent = progress[side] + " %";
      label.append(words + " ", bar, ` ${progress[side]} %`);
      box.append(label);
    }
    return box;
  }

  function numbers(pairs) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Numbers";
    const list = document.createElement("dl");
    list.className = "numbers";
    for (const [name, text] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = text;
      list.append(dt, dd);
    }
    details.append(summary, list);
    return details;
  }

  /* Re-drawn from the data's guard_evidence (built by the server, like the first render); open details stay open. */
  function drawGuards(guards) {
    const list = document.getElementById("guard-evidence");
    if (!guards.length) return;
    const open = new Set([...list.querySelectorAll("li[data-metric] details[open]")].map((d) => d.closest("li").dataset.metric));
    list.replaceChildren(...guards.map(guardItem));
    list.querySelectorAll("li[data-metric]").forEach((li) => { if (open.has(li.dataset.metric)) li.querySelector("details")?.setAttribute("open", ""); });
  }

  /* "12:34 left" until the step's timeout; then the next tick pauses the rollout (and reloads this page). */
  function countdown() {
    const box = document.getElementById("step-countdown");
    if (!box) return;
    const out = box.querySelector(".countdown");
    const deadline = Date.parse(box.dataset.deadline);
    function show() {
      const left = Math.round((deadline - Date.now()) / 1000);
      if (left <= 0) {
        out.textContent = ": timed out, pausing at the next tick";
        return;
      }
      const h = Math.floor(left / 3600);
      const m = Math.floor((left % 3600) / 60);
      const sec = String(left % 60).padStart(2, "0");
      out.textContent = ` (${h ? h + ":" + String(m).padStart(2, "0") : m}:${sec} left)`;
    }
    show();
    setInterval(show, 1000);
  }

  const rendered = { state: data.state, step: data.step };

  function apply(fresh) {
    data = fresh;
    // A transition while this page was loading sent its message before the socket was back: catch up.
    if ((fresh.state !== rendered.state || fresh.step !== rendered.step) && !typing()) {
      window.location.reload();
      return;
    }
    drawCharts(fresh.charts);
    drawVerdicts(fresh.verdicts);
    drawGuards(fresh.guard_evidence);
  }

  async function refresh() {
    try {
      apply(await W.getJSON(`/dashboard-data/rollouts/${data.id}/`));
    } catch (error) {
      console.warn("rollout refresh failed", error);
    }
  }
  const refreshSoon = W.throttle(refresh, data.refresh_s);

  function typing() {
    return Array.from(document.querySelectorAll("form.gate input[name=reason]")).some((input) => input.value);
  }

  function onBatch(messages) {
    const changed = messages.filter((m) => m.type === "rollout.changed" && m.payload.rollout === data.id);
    if (changed.length) {
      if (!typing()) {
        window.location.reload();
        return;
      }
      document.getElementById("rollout-state").textContent = changed[changed.length - 1].payload.state + " (changed: reload to see why)";
    }
    if (changed.length || messages.some((m) => m.type === "traffic.point" && m.payload.route === data.route)) refreshSoon();
  }

  drawCharts(data.charts);
  countdown();
  W.connect({ onBatch, onConnect: refresh });
})();
