/* The "New rollout" form. The server validates (the API's own serializer) and renders every error by its
   field; this script only helps: the canary choices follow the route, a plan template fills the step rows, an
   edited row makes the plan "custom", and "Add a step" adds a row. Everything stays a plain form (Tab, Enter). */
(function () {
  "use strict";
  const W = window.Weathervane;
  const data = W.initialData();
  const form = document.getElementById("rollout-form");
  const routeSelect = document.getElementById("id_route");
  const canarySelect = document.getElementById("id_canary");
  const templateSelect = document.getElementById("id_plan_template");
  const body = document.querySelector("#plan-steps tbody");
  const MAX_ROWS = 22; // the API's 20 steps and the spare rows the server renders

  /* The route's targets, the lightest first: a canary usually starts at weight 0. */
  function showCanaries() {
    const route = data.routes[routeSelect.value];
    const busy = document.getElementById("route-busy");
    busy.hidden = !(route && route.rollout);
    if (route && route.rollout) busy.textContent = `Rollout #${route.rollout} drives this route now; a draft can start once it ends.`;
    if (!route) return;
    const chosen = canarySelect.value;
    const targets = [...route.targets].sort((a, b) => a.weight - b.weight || a.name.localeCompare(b.name));
    canarySelect.replaceChildren(...targets.map((t) => new Option(`${t.name} (weight ${t.weight} %)`, t.name)));
    if (targets.some((t) => t.name === chosen)) canarySelect.value = chosen;
  }

  function rows() {
    return [...body.querySelectorAll("tr.step-row")];
  }

  function field(row, name) {
    return row.querySelector(`[name$="-${name}"]`);
  }

  function setRow(row, step) {
    field(row, "kind").value = step.pause ? "pause" : "weight";
    for (const name of ["weight", "min_dwell_s", "min_requests"]) field(row, name).value = step[name] ?? "";
  }

  function fillTemplate() {
    const template = data.templates[templateSelect.value];
    if (!template) return;
    while (rows().length < template.steps.length) addRow();
    rows().forEach((row, n) => setRow(row, template.steps[n] || {}));
    changed();
  }

  /* A copy of the last row, numbered next; its fields named as the server reads them. */
  function addRow() {
    const all = rows();
    if (all.length >= MAX_ROWS) return null;
    const row = all[all.length - 1].cloneNode(true);
    const n = all.length;
    row.dataset.row = String(n);
    row.querySelector("th").textContent = String(n + 1);
    row.querySelectorAll("[name]").forEach((input) => { input.name = input.name.replace(/^step-\d+-/, `step-${n}-`); });
    row.querySelectorAll("[aria-label]").forEach((input) => {
      input.setAttribute("aria-label", input.getAttribute("aria-label").replace(/^Step \d+/, `Step ${n + 1}`));
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    });
    row.querySelectorAll(".field-error").forEach((node) => node.remove());
    setRow(row, {});
    body.append(row);
    return row;
  }

  // --- Time to a decision: the server's dry run of this very form (the API's preview, same serializer) ---------

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return null;
    if (seconds < 90) return `about ${Math.max(1, Math.round(seconds))} s`;
    if (seconds < 5400) return `about ${Math.round(seconds / 60)} min`;
    return `about ${(seconds / 3600).toFixed(1)} h`;
  }

  const reqs = (rps) => `${rps < 10 ? rps.toFixed(1) : Math.round(rps)} req/s`;

  /* One step's line: how long, at what canary traffic, which guard needs how many requests. */
  function stepText(step) {
    const time = duration(step.seconds);
    const needs = step.guards.filter((g) => g.requests_needed).map((g) => `${g.metric} needs ~${g.requests_needed.toLocaleString()} requests`);
    const head = time ? `${time} at ${reqs(step.canary_rps)} to the canary` : `no decision expected at ${reqs(step.canary_rps)} to the canary`;
    const tail = step.decides_in_time ? "" : "; cannot decide within its step timeout";
    return head + (needs.length ? ` (${needs.join(", ")})` : "") + tail;
  }

  /* Steps the forecast leaves out say why: reaching 100 % is the promotion, a pause waits for a human. */
  function clearForecast() {
    rows().forEach((row) => {
      row.classList.remove("slow");
      const pause = field(row, "kind").value === "pause";
      const full = field(row, "weight").value === "100";
      row.querySelector(".step-forecast").textContent = pause ? "waits for a human's approval" : full ? "the promotion: nothing left to compare" : "";
    });
  }

  function showForecast(answer) {
    const box = document.getElementById("forecast");
    clearForecast();
    box.hidden = false;
    const forecast = answer.forecast;
    const slow = forecast.steps.filter((s) => !s.decides_in_time).length;
    document.getElementById("forecast-summary").textContent = `At the route's ${reqs(forecast.route_rps)} over the last ${duration(forecast.window_s).replace("about ", "")}: ` +
      (slow ? `${slow} step(s) cannot decide within the step timeout.` : "every step can decide within the step timeout.");
    forecast.steps.forEach((step) => {
      const row = rows()[answer.step_rows[step.index]]; // the plan's step index → the form's row
      if (!row) return;
      row.classList.toggle("slow", !step.decides_in_time);
      row.querySelector(".step-forecast").textContent = stepText(step);
    });
    const warnings = document.getElementById("forecast-warnings");
    warnings.replaceChildren(...forecast.warnings.map((w) => Object.assign(document.createElement("li"), { textContent: w })));
  }

  function showNoForecast(text) {
    clearForecast();
    document.getElementById("forecast").hidden = false;
    document.getElementById("forecast-summary").textContent = text;
    document.getElementById("forecast-warnings").replaceChildren();
  }

  let asked = 0; // bumped at every change: an answer to an older form is never drawn on the rows of a newer one
  async function preview() {
    const mine = asked;
    try {
      const response = await fetch(form.dataset.preview, { method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": W.csrfToken() } });
      if (mine !== asked) return; // a newer edit asked again meanwhile
      if (response.status === 400) return showNoForecast("No forecast until the form is valid: Create draft names each problem.");
      if (!response.ok) throw new Error("preview answered " + response.status);
      showForecast(await response.json());
    } catch (error) {
      console.warn("rollout preview failed", error);
    }
  }
  const previewSoon = debounce(preview, 400);

  function debounce(fn, ms) {
    let timer = null;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  /* Called after any change of the form. */
  function changed() {
    asked += 1;
    if (form.dataset.preview) previewSoon();
  }

  routeSelect.addEventListener("change", () => { showCanaries(); changed(); });
  templateSelect.addEventListener("change", fillTemplate);
  body.addEventListener("input", () => { templateSelect.value = "custom"; changed(); });
  form.addEventListener("change", (event) => { if (!body.contains(event.target) && event.target !== templateSelect && event.target !== routeSelect) changed(); });
  const add = document.getElementById("add-step");
  add.hidden = false;
  add.addEventListener("click", () => {
    const row = addRow();
    templateSelect.value = "custom";
    if (row) field(row, "weight").focus();
  });
  showCanaries();
  changed();
})();
