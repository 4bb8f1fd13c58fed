/* Overview: deployment tiles with live sparklines, and every route's split. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const SPARK_SPAN_MS = 30 * 60 * 1000;
  const REFRESH_S = 10;
  const STATE_LABELS = { unknown: "Unknown", up: "Up", degraded: "Degraded", down: "Down" };

  let data = W.initialData();
  const sparks = new Map((data.deployments || []).map((d) => [d.name, d.spark.slice()]));

  function tileOf(name) {
    return document.querySelector(`.tile[data-deployment="${CSS.escape(name)}"]`);
  }

  function drawSpark(name) {
    const tile = tileOf(name);
    if (!tile) return;
    const cutoff = Date.now() - SPARK_SPAN_MS;
    const points = (sparks.get(name) || []).filter((p) => p[0] >= cutoff);
    sparks.set(name, points);
    tile.dataset.points = String(points.length);
    const line = tile.querySelector(".spark polyline");
    if (!points.length) {
      line.setAttribute("points", "");
      return;
    }
    // A single measurement is drawn as a level line up to now.
    const drawn = points.length === 1 ? [points[0], [Date.now(), points[0][1]]] : points;
    const top = Math.max(...drawn.map((p) => p[1])) || 1;
    const coords = drawn.map((p) => {
      const x = ((p[0] - cutoff) / SPARK_SPAN_MS) * 200;
      const y = 38 - (p[1] / top) * 34;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    line.setAttribute("points", coords.join(" "));
  }

  function setState(el, state, reason) {
    el.className = el.className.replace(/\bstate-\S+/g, "").trim() + " state-" + state;
    const label = el.querySelector("[data-field=state]");
    label.textContent = STATE_LABELS[state] || state;
    label.title = reason || "";
    const why = el.querySelector("[data-field=reason]");
    if (why) why.textContent = reason || "";
  }

  function field(tile, name, text) {
    const el = tile.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = text;
  }

  function applyTile(tile, d) {
    setState(tile, d.state, d.reason);
    field(tile, "p50", W.ms(d.p50));
    field(tile, "p95", W.ms(d.p95));
    field(tile, "ttft", W.ms(d.ttft));
    field(tile, "error_rate", W.pct(d.error_rate));
    field(tile, "tps", W.whole(d.tps));
    // Keep live points newer than the server's last minute (not rolled up yet).
    const lastT = d.spark.length ? d.spark[d.spark.length - 1][0] : 0;
    const live = (sparks.get(d.name) || []).filter((p) => p[0] > lastT + 60000);
    sparks.set(d.name, d.spark.concat(live));
    drawSpark(d.name);
  }

  function applyProblems(deployments) {
    const problems = deployments.filter((d) => d.state === "down" || d.state === "degraded");
    const section = document.getElementById("problems");
    if (!section) return;
    section.classList.toggle("hidden", problems.length === 0);
    const list = document.getElementById("problem-list");
    list.replaceChildren(...problems.map((d) => {
      const item = document.createElement("li");
      item.className = "state-" + d.state;
      const link = document.createElement("a");
      link.href = tileOf(d.name).querySelector("h2 a").href;
      link.textContent = d.label;
      item.append(link, `: ${(STATE_LABELS[d.state] || d.state).toLowerCase()}${d.reason ? " — " + d.reason : ""}`);
      return item;
    }));
  }

  function splitText(targets) {
    const cell = document.createElement("td");
    cell.className = "split-text";
    targets.forEach((t, i) => {
      const span = document.createElement("span");
      span.className = "share" + (t.weight ? "" : " zero");
      span.textContent = `${t.deployment} ${t.weight}%`;
      cell.append(span);
      if (i < targets.length - 1) cell.append(" · ");
    });
    return cell;
  }

  function applySplit(name, weights) {
    const row = document.querySelector(`#split-rows tr[data-route="${CSS.escape(name)}"]`);
    if (!row) return;
    const targets = Object.entries(weights).map(([deployment, weight]) => ({ deployment, weight }))
      .sort((a, b) => b.weight - a.weight || a.deployment.localeCompare(b.deployment));
    row.querySelector(".split-text").replaceWith(splitText(targets));
  }

  /* A route's traffic: requests/s over the last minute, errors and p95 over 15 minutes, its active rollout. */
  function applyRouteFigures(route) {
    const row = document.querySelector(`#split-rows tr[data-route="${CSS.escape(route.name)}"]`);
    if (!row) return;
    field(row, "rps", W.rate(route.rps));
    field(row, "error_rate", W.pct(route.error_rate));
    field(row, "p95", W.ms(route.p95));
    const cell = row.querySelector("[data-field=rollout]");
    if (!route.rollout) return cell.replaceChildren("–");
    const link = document.createElement("a");
    link.href = `/rollouts/${route.rollout.id}/`;
    link.textContent = `#${route.rollout.id} of ${route.rollout.canary}`;
    cell.replaceChildren(link, ` (${route.rollout.state})`);
  }

  function apply(fresh) {
    const known = (data.deployments || []).map((d) => d.name).join("\n");
    const now = (fresh.deployments || []).map((d) => d.name).join("\n");
    const routesKnown = (data.routes || []).map((r) => r.name).join("\n");
    const routesNow = (fresh.routes || []).map((r) => r.name).join("\n");
    if (known !== now || routesKnown !== routesNow) {
      window.location.reload(); // deployments or routes were added or removed
      return;
    }
    data = fresh;
    fresh.deployments.forEach((d) => applyTile(tileOf(d.name), d));
    applyProblems(fresh.deployments);
    fresh.routes.forEach((r) => {
      applySplit(r.name, Object.fromEntries(r.targets.map((t) => [t.deployment, t.weight])));
      applyRouteFigures(r);
    });
  }

  async function refresh() {
    try {
      apply(await W.getJSON("/dashboard-data/overview/"));
    } catch (error) {
      console.warn("overview refresh failed", error);
    }
  }
  const refreshSoon = W.throttle(refresh, REFRESH_S);

  function onMessage(message) {
    const p = message.payload || {};
    if (message.type === "probe.result" && sparks.has(p.deployment) && p.latency_ms != null) {
      sparks.get(p.deployment).push([Date.parse(p.at) || Date.now(), p.latency_ms]);
      drawSpark(p.deployment);
    } else if (message.type === "health.changed" && !p.api_key && tileOf(p.deployment || "")) {
      setState(tileOf(p.deployment), p.state, p.reason);
    } else if (message.type === "weights.changed") {
      applySplit(p.route, p.weights || {});
      return;
    }
    refreshSoon();
  }

  (data.deployments || []).forEach((d) => drawSpark(d.name));
  W.connect({ onBatch: (messages) => messages.forEach(onMessage), onConnect: refresh });
})();
