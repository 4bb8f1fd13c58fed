/* Routes: each route's split with live traffic side by side and its fallback
   chain, and (for staff) a slider form and a chain editor that apply changes
   through the REST API. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const REFRESH_S = 10;
  const STATE_LABELS = { unknown: "Unknown", up: "Up", degraded: "Degraded", down: "Down" };

  let data = W.initialData();

  function routeOf(name) {
    return (data.routes || []).find((r) => r.name === name);
  }

  function sectionOf(name) {
    return document.querySelector(`section.route[data-route="${CSS.escape(name)}"]`);
  }

  function apiUrl(name, suffix) {
    return "/api/v1/routes/" + name.split("/").map(encodeURIComponent).join("/") + "/" + suffix;
  }

  // --- The split form ------------------------------------------------------------

  function weightRows(form) {
    return [...form.querySelectorAll(".weight-row")];
  }

  function readWeights(form) {
    const weights = {};
    for (const row of weightRows(form)) weights[row.dataset.deployment] = Number(row.querySelector(".weight-number").value);
    return weights;
  }

  function setWeights(form, weights) {
    for (const row of weightRows(form)) {
      const value = weights[row.dataset.deployment];
      if (value === undefined) continue;
      row.querySelector("input[type=range]").value = value;
      row.querySelector(".weight-number").value = value;
    }
    showTotal(form);
  }

  function showTotal(form) {
    const total = Object.values(readWeights(form)).reduce((a, b) => a + b, 0);
    form.querySelector(".total-value").textContent = String(total);
    form.querySelector(".total-hint").textContent = total === 100 ? "" : "— weights must add up to 100";
    form.querySelector(".total").classList.toggle("bad", total !== 100);
  }

  /* With two targets one slider moves the other: the split always adds up to 100. */
  function onWeightInput(form, row, value) {
    const clamped = Math.max(0, Math.min(100, Math.round(Number(value) || 0)));
    const weights = { [row.dataset.deployment]: clamped };
    const rows = weightRows(form);
    if (rows.length === 2) {
      const other = rows.find((r) => r !== row);
      weights[other.dataset.deployment] = 100 - clamped;
    }
    setWeights(form, weights);
    form.dataset.dirty = "true";
    message(form, "", "");
    previewLater(form);
  }

  // --- Cost before you commit: the weights API's dry run ---------------------------

  const PREVIEW_DELAY_MS = 300;
  const FORMATS = { spend_per_day: (v) => (v === null ? "–" : "$" + Number(v).toFixed(4)), p95_ms: W.ms, error_rate: W.pct };

  function previewLater(form) {
    const table = form.querySelector(".projection");
    if (!table) return;
    window.clearTimeout(form.previewTimer);
    form.previewTimer = window.setTimeout(() => preview(form, table), PREVIEW_DELAY_MS);
  }

  async function preview(form, table) {
    const weights = readWeights(form);
    if (Object.values(weights).reduce((a, b) => a + b, 0) !== 100) return;
    const { response, answer } = await send(form, "PATCH", "weights", { weights, dry_run: true }).catch(() => ({}));
    if (!response || !response.ok || !answer) return;
    const projection = answer.projection;
    table.querySelector("[data-field=volume]").textContent = W.whole(projection.requests_per_day);
    for (const [name, format] of Object.entries(FORMATS)) {
      const row = table.querySelector(`[data-row="${name}"]`);
      row.querySelector("[data-field=current]").textContent = format(projection.current[name]);
      row.querySelector("[data-field=proposed]").textContent = format(projection.proposed[name]);
    }
    table.hidden = false;
  }

  /* Return the split with `name` at 0 and its weight spread over the other
     enabled targets in proportion to their weights (largest remainder). */
  function drained(weights, name, enabled) {
    const others = Object.keys(weights).filter((n) => n !== name && enabled(n));
    if (!others.length) return null;
    const freed = weights[name];
    const base = others.reduce((sum, n) => sum + weights[n], 0);
    const exact = others.map((n) => ({ n, v: weights[n] + freed * (base ? weights[n] / base : 1 / others.length) }));
    const result = { ...weights, [name]: 0 };
    exact.forEach((e) => { result[e.n] = Math.floor(e.v); });
    let rest = 100 - Object.values(result).reduce((a, b) => a + b, 0);
    exact.sort((a, b) => (b.v % 1) - (a.v % 1));
    for (const e of exact) if (rest-- > 0) result[e.n] += 1;
    return result;
  }

  function message(form, error, ok) {
    form.querySelector(".form-error").textContent = error;
    form.querySelector(".form-ok").textContent = ok;
  }

  /* Turn the API's {"field": ["message"]} or {"detail": "..."} into one readable line. */
  function describeError(body, status) {
    if (!body || typeof body !== "object") return `The server answered ${status}.`;
    if (body.detail) return String(body.detail);
    return Object.entries(body).map(([field, problems]) => {
      const text = Array.isArray(problems) ? problems.join(" ") : String(problems);
      return field === "non_field_errors" ? text : `${field}: ${text}`;
    }).join(" ");
  }

  async function send(form, method, suffix, body) {
    const response = await fetch(apiUrl(form.dataset.route, suffix), {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json",
        "X-CSRFToken": W.csrfToken(), "If-Match": `"${form.dataset.version}"` },
      body: JSON.stringify(body),
    });
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = null; }
    return { response, answer };
  }

  async function submit(form, method, suffix, body) {
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    message(form, "", "Applying…");
    try {
      const { response, answer } = await send(form, method, suffix, body);
      if (response.ok) return applied(form, answer);
      if (response.status === 409) return conflicted(form, answer);
      message(form, describeError(answer, response.status), "");
    } catch (error) {
      message(form, "Could not reach the server; nothing was changed. Try again.", "");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function isChainForm(form) {
    return form.classList.contains("fallback-form");
  }

  function splitOf(route) {
    return Object.fromEntries(route.targets.map((t) => [t.deployment, t.weight]));
  }

  function chainOf(route) {
    return (route.fallbacks || []).map((f) => (typeof f === "string" ? f : f.deployment));
  }

  /* What a form edits, as a comparable string: its split, or its chain. */
  function baseKey(form, value) {
    return JSON.stringify(isChainForm(form) ? value : Object.entries(value).sort());
  }

  /* Show `route` (an API answer or a routes_json row) in `form`: its split, or its chain. */
  function resetForm(form, route) {
    if (isChainForm(form)) setChain(form, chainOf(route));
    else setWeights(form, splitOf(route));
  }

  /* A new `version` of the route shows `value` (a split or a chain). An untouched form follows it; an edited one
     keeps its version (a stale edit is refused with a 409) unless the new version left what it edits as it was:
     applying a chain does not make a pending split edit stale, nor the reverse. */
  function follow(form, version, value) {
    if (!form.dataset.dirty) {
      form.dataset.version = version;
      form.base = baseKey(form, value);
      if (isChainForm(form)) setChain(form, value);
      else setWeights(form, value);
    } else if (form.base === baseKey(form, value)) {
      form.dataset.version = version;
    }
  }

  function applied(form, route) {
    form.dataset.version = route.version;
    form.dataset.dirty = "";
    form.querySelector("input[name=reason]").value = "";
    form.base = baseKey(form, isChainForm(form) ? chainOf(route) : splitOf(route));
    resetForm(form, route);
    message(form, "", `Applied — now version ${route.version}.`);
    refresh();
  }

  function conflicted(form, answer) {
    form.dataset.dirty = "";
    const route = routeOf(form.dataset.route);
    if (route) resetForm(form, route);
    form.base = null; // until the refresh below shows the current one
    if (answer && answer.version) form.dataset.version = answer.version;
    const what = isChainForm(form) ? "fallbacks" : "split";
    message(form, describeError(answer, 409) + ` The form now shows the current ${what}.`, "");
    refresh();
  }

  function reasonOf(form) {
    const reason = form.querySelector("input[name=reason]");
    if (!reason.value.trim()) {
      const what = isChainForm(form) ? "fallbacks change" : "split changes";
      reason.setCustomValidity(`Say why the ${what}; the reason is kept in the audit trail.`);
      reason.reportValidity();
      reason.setCustomValidity("");
      return null;
    }
    return reason.value.trim();
  }

  function wireForm(form) {
    for (const row of weightRows(form)) {
      row.querySelector("input[type=range]").addEventListener("input", (e) => onWeightInput(form, row, e.target.value));
      row.querySelector(".weight-number").addEventListener("change", (e) => onWeightInput(form, row, e.target.value));
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = reasonOf(form);
      if (reason !== null) submit(form, "PUT", "weights", { weights: readWeights(form), reason });
    });
    form.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button || button.disabled) return;
      if (button.classList.contains("drain")) drain(form, button.dataset.deployment);
      if (button.classList.contains("revert")) revert(form);
    });
    showTotal(form);
  }

  function drain(form, name) {
    const route = routeOf(form.dataset.route);
    const enabled = (n) => { const t = route && route.targets.find((x) => x.deployment === n); return !t || t.enabled; };
    const split = drained(readWeights(form), name, enabled);
    if (!split) {
      message(form, `${name} is the only enabled target; there is nowhere to move its traffic.`, "");
      return;
    }
    setWeights(form, split);
    form.dataset.dirty = "true";
    const reason = reasonOf(form);
    if (reason !== null) submit(form, "PUT", "weights", { weights: split, reason });
  }

  function revert(form) {
    const reason = reasonOf(form);
    if (reason !== null) submit(form, "POST", "weights/revert", { reason });
  }

  // --- The fallback chain editor --------------------------------------------------

  function readChain(form) {
    return [...form.querySelectorAll(".fallback-edit li")].map((li) => li.dataset.deployment);
  }

  function chainButton(cls, text, label) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = cls;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    return button;
  }

  function chainItem(name) {
    const li = document.createElement("li");
    li.dataset.deployment = name;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    li.append(label, " ", chainButton("move-up", "↑", `Move ${name} up`), " ",
      chainButton("move-down", "↓", `Move ${name} down`), " ", chainButton("remove", "Remove", `Remove ${name}`));
    return li;
  }

  function setChain(form, names) {
    form.querySelector(".fallback-edit").replaceChildren(...names.map(chainItem));
  }

  /* Reorder, remove or add in the editor only; nothing is sent before "Apply fallbacks". */
  function editChain(form, button) {
    const names = readChain(form);
    const item = button.closest("li");
    const at = item ? names.indexOf(item.dataset.deployment) : -1;
    if (button.classList.contains("add")) {
      const choice = form.querySelector(".fallback-choice");
      if (!choice.value || names.includes(choice.value)) return choice.focus();
      names.push(choice.value);
      choice.value = "";
    } else if (button.classList.contains("remove")) {
      names.splice(at, 1);
    } else {
      const to = button.classList.contains("move-up") ? at - 1 : at + 1;
      if (to < 0 || to >= names.length) return;
      names.splice(to, 0, names.splice(at, 1)[0]);
    }
    setChain(form, names);
    form.dataset.dirty = "true";
    message(form, "", "");
    if (item) keepFocus(form, button, item.dataset.deployment, at);
  }

  /* Keep the keyboard where it was: on the moved item's same button, or on the item after a removed one. */
  function keepFocus(form, button, name, at) {
    const items = form.querySelectorAll(".fallback-edit li");
    const moved = [...items].find((li) => li.dataset.deployment === name);
    const kind = ["move-up", "move-down", "remove"].find((k) => button.classList.contains(k));
    const next = items[Math.min(at, items.length - 1)];
    const target = moved ? moved.querySelector("." + kind) : next ? next.querySelector(".remove") : null;
    (target || form.querySelector(".fallback-choice")).focus();
  }

  function wireChainForm(form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = reasonOf(form);
      if (reason !== null) submit(form, "PUT", "fallbacks", { fallbacks: readChain(form), reason });
    });
    form.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (button && !button.disabled && button.type !== "submit") editChain(form, button);
    });
  }

  // --- Live figures ---------------------------------------------------------------

  function cell(row, field, text) {
    const el = row.querySelector(`[data-field="${field}"]`);
    if (el) el.textContent = text;
  }

  function showWeight(section, deployment, weight) {
    const row = section.querySelector(`tbody tr[data-deployment="${CSS.escape(deployment)}"]`);
    if (!row) return;
    const box = row.querySelector("[data-field=weight]");
    box.querySelector(".bar").style.setProperty("--w", weight + "%");
    box.querySelector(".num").textContent = weight + "%";
  }

  /* A split changed (here or elsewhere): show it; an untouched form follows it. */
  function applySplit(name, version, weights) {
    const section = sectionOf(name);
    if (!section) return;
    const shown = section.querySelector("[data-field=version]");
    if (Number(version) < Number(shown.textContent)) return; // an older message overtaken by a refresh
    shown.textContent = String(version);
    Object.entries(weights).forEach(([deployment, weight]) => showWeight(section, deployment, weight));
    const route = routeOf(name);
    if (route) route.targets.forEach((t) => { if (t.deployment in weights) t.weight = weights[t.deployment]; });
    const form = section.querySelector("form.split-form");
    if (form) follow(form, version, weights);
  }

  function deploymentUrl(name) {
    return "/deployments/" + name.split("/").map(encodeURIComponent).join("/") + "/";
  }

  /* Whether fallback `name` of `route` is enabled, as far as the last refresh knows (the next one corrects it). */
  function enabledFallback(route, name) {
    const known = route && [...(route.fallbacks || []), ...route.targets].find((f) => f.deployment === name);
    return known ? known.enabled : true;
  }

  function showChain(section, rows) {
    const box = section.querySelector(".fallbacks[data-field=fallbacks]");
    if (!rows.length) return box.replaceChildren("Fallbacks: none. A request fails once every weighted target failed.");
    const list = document.createElement("ol");
    list.className = "fallback-chain";
    for (const row of rows) {
      const li = document.createElement("li");
      li.dataset.deployment = row.deployment;
      const link = document.createElement("a");
      link.href = deploymentUrl(row.deployment);
      link.textContent = row.deployment;
      li.append(link);
      if (!row.enabled) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "disabled";
        li.append(" ", badge);
      }
      list.append(li);
    }
    box.replaceChildren("Fallbacks (tried in this order once every weighted target failed or has an open circuit):", list);
  }

  /* A chain changed (here or elsewhere): show it; an untouched chain editor follows it.
     `chain` is deployment names (a live notice) or {deployment, enabled} rows (a refresh). */
  function applyChain(name, version, chain) {
    const section = sectionOf(name);
    if (!section) return;
    const shown = section.querySelector("[data-field=version]");
    if (Number(version) < Number(shown.textContent)) return;
    shown.textContent = String(version);
    const route = routeOf(name);
    const rows = chain.map((f) => (typeof f === "string" ? { deployment: f, enabled: enabledFallback(route, f) } : f));
    showChain(section, rows);
    const form = section.querySelector("form.fallback-form");
    if (form) follow(form, version, rows.map((r) => r.deployment));
  }

  function historyRow(change) {
    const row = document.createElement("tr");
    const moves = Object.entries(change.after || {}).map(([n, w]) => {
      const before = (change.before || {})[n];
      return `${n} ${before === undefined || before === null ? "–" : before}→${w}%`;
    }).join(", ") + (change.fallbacks ? "; " + change.fallbacks : "");
    for (const value of [W.timeElement(change.at), change.actor, moves, change.reason]) {
      const td = document.createElement("td");
      td.append(value);
      row.append(td);
    }
    return row;
  }

  function applyRoute(route) {
    const section = sectionOf(route.name);
    if (!section) return;
    applySplit(route.name, route.version, Object.fromEntries(route.targets.map((t) => [t.deployment, t.weight])));
    applyChain(route.name, route.version, route.fallbacks);
    applyWheel(section, route.rollout);
    for (const t of route.targets) {
      const row = section.querySelector(`tbody tr[data-deployment="${CSS.escape(t.deployment)}"]`);
      if (!row) continue;
      row.className = "state-" + t.state;
      cell(row, "state", STATE_LABELS[t.state] || t.state);
      cell(row, "share", W.pct(t.share));
      cell(row, "rps", W.rate(t.rps));
      cell(row, "error_rate", W.pct(t.error_rate));
      cell(row, "p50", W.ms(t.p50));
      cell(row, "p95", W.ms(t.p95));
    }
    const history = section.querySelector("[data-field=history]");
    if (route.history.length) history.replaceChildren(...route.history.map(historyRow));
    drawChart(route);
  }

  /* The route's rollout line: a banner while it holds the wheel, a note while paused, nothing without one. */
  function showRollout(section, rollout) {
    const head = section.querySelector(".route-head");
    let line = head.querySelector("[data-field=rollout]");
    const offer = head.querySelector("[data-field=new-rollout]");
    if (offer) offer.hidden = Boolean(rollout);
    if (!rollout) return line && line.remove();
    if (!line) {
      line = document.createElement("p");
      line.dataset.field = "rollout";
      head.append(line);
    }
    line.className = "rollout-link" + (rollout.locking ? " banner" : "");
    const link = document.createElement("a");
    link.href = `/rollouts/${rollout.id}/`;
    link.textContent = `rollout #${rollout.id} of ${rollout.canary}`;
    line.replaceChildren(link, ` (${rollout.state}) ` + (rollout.locking
      ? "is driving this route; pause it to take the wheel."
      : "is paused: the split is yours to change; resume it to hand the wheel back."));
  }

  /* While a rollout holds the wheel the split form is disabled; paused or ended, staff get it back. */
  function applyWheel(section, rollout) {
    showRollout(section, rollout);
    const form = section.querySelector("form.split-form");
    if (!form || form.dataset.canChange !== "true") return;
    const locked = Boolean(rollout && rollout.locking);
    if (form.dataset.locked === String(locked)) return; // only on a change: a submit in flight keeps its buttons
    form.dataset.locked = String(locked);
    form.querySelector("fieldset").disabled = locked;
    form.querySelectorAll("fieldset input, fieldset button").forEach((control) => { control.disabled = locked; });
  }

  // --- Split and traffic over time: requests/s per target and minute, stacked ----------

  const PALETTE = ["#2563eb", "#d97706", "#0f766e", "#7c3aed", "#dc2626", "#64748b"];
  const charts = new Map();

  function chartData(chart) {
    return {
      labels: chart.t.map((t) => W.shortFormat.format(new Date(t))),
      datasets: Object.entries(chart.targets).map(([name, values], i) => ({
        label: name, data: values, backgroundColor: PALETTE[i % PALETTE.length], borderWidth: 0,
      })),
    };
  }

  function drawChart(route) {
    const canvas = document.querySelector(`canvas[data-route="${CSS.escape(route.name)}"]`);
    if (!canvas || !window.Chart || !route.chart) return;
    const shown = charts.get(route.name);
    if (shown) {
      shown.data = chartData(route.chart);
      shown.update("none");
      return;
    }
    charts.set(route.name, new window.Chart(canvas, {
      type: "bar",
      data: chartData(route.chart),
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { stacked: true, ticks: { maxTicksLimit: 8, maxRotation: 0 } },
          y: { stacked: true, beginAtZero: true, ticks: { callback: W.axisTicks("/s") } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${W.rate(item.parsed.y)}` } },
        },
      },
    }));
  }

  async function refresh() {
    try {
      const fresh = await W.getJSON("/dashboard-data/routes/");
      const names = (r) => (r.routes || []).map((x) => x.name + ":" + x.targets.map((t) => t.deployment).join(",")).join("\n");
      if (names(fresh) !== names(data)) return window.location.reload(); // routes or targets added/removed
      data = fresh;
      fresh.routes.forEach(applyRoute);
    } catch (error) {
      console.warn("routes refresh failed", error);
    }
  }
  const refreshSoon = W.throttle(refresh, REFRESH_S);

  function onBatch(messages) {
    for (const m of messages) {
      const p = m.payload || {};
      if (m.type === "weights.changed") {
        applySplit(p.route, p.version, p.weights || {});
        if (Array.isArray(p.fallbacks)) applyChain(p.route, p.version, p.fallbacks);
        refresh(); // the audit trail gained a row
      } else if (m.type === "rollout.changed") {
        refresh();
      } else if (m.type === "traffic.point" || m.type === "health.changed") {
        refreshSoon();
      }
    }
  }

  // Set from here, not a style attribute: the Content-Security-Policy allows no inline styles.
  document.querySelectorAll(".bar[data-weight]").forEach((bar) => bar.style.setProperty("--w", bar.dataset.weight + "%"));
  document.querySelectorAll("form.split-form").forEach((form) => {
    if (form.dataset.canChange === "true") wireForm(form); // also while a rollout holds it: a pause gives it back
    else showTotal(form);
  });
  document.querySelectorAll("form.fallback-form").forEach(wireChainForm);
  document.querySelectorAll("form.split-form, form.fallback-form").forEach((form) => {
    const route = routeOf(form.dataset.route);
    if (route) form.base = baseKey(form, isChainForm(form) ? chainOf(route) : splitOf(route));
  });
  (data.routes || []).forEach(drawChart);
  W.connect({ onBatch, onConnect: refresh });
  window.WeathervaneRoutes = { drained }; // exposed for checks in the browser console and tests
})();
