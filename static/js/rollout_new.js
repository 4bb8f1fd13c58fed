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

  /* Called after any change; the time-to-decision preview hooks in here. */
  function changed() {
    if (typeof window.WeathervaneRolloutPreview === "function") window.WeathervaneRolloutPreview(form);
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
})();
