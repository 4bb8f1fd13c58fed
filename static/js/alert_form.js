/* The channel, rule and policy forms of the alerts page. The server validates (the API's own serializers) and
   renders every error by its field; this script only helps: a rule shows the parameters of its condition, a
   channel its signing secret when it is a webhook, and a rule or policy previews what it would catch now. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const form = document.getElementById("config-form");
  const kind = document.getElementById("id_kind");
  if (!form) return;

  /* A rule: only the chosen condition's parameters (all are rendered, so the form works without this script). */
  function showKind() {
    document.querySelectorAll("fieldset.params").forEach((set) => { set.hidden = set.dataset.kind !== kind.value; });
    const secret = document.getElementById("secret-field");
    if (secret) secret.hidden = kind.value !== "webhook";
  }
  if (kind) {
    kind.addEventListener("change", showKind);
    showKind();
  }

  // --- The preview: the server's answer for the form as it stands (validated as a save would be) -------------

  const output = document.getElementById("preview");
  const button = document.getElementById("preview-button");
  if (!form.dataset.preview || !output) return;
  let asked = 0;

  function item(text, sub) {
    const li = document.createElement("li");
    li.textContent = text;
    if (sub) {
      const span = document.createElement("span");
      span.className = "sub";
      span.textContent = " " + sub;
      li.append(span);
    }
    return li;
  }

  function labels(map) {
    return Object.entries(map).map(([k, v]) => `${k}=${v}`).join(", ");
  }

  function list(rows, describe) {
    const ul = document.createElement("ul");
    ul.className = "preview-alerts";
    ul.append(...rows.map(describe));
    return ul;
  }

  function line(text) {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }

  function show(answer) {
    const parts = [];
    if (answer.errors) {
      parts.push(line("No preview until the form is valid:"), list(answer.errors, (e) => item(e)));
    } else if ("for_s" in answer) {
      parts.push(line(answer.count ? `Holds now for ${answer.count}: each would be pending ${answer.for_s} s, then fire.`
        : "Holds for nothing now."));
      parts.push(list(answer.alerts, (a) => item(a.summary, `(${labels(a.labels)})${a.firing ? " · already firing" : ""}`)));
    } else {
      parts.push(line(answer.count ? `Would take ${answer.count} firing alert${answer.count > 1 ? "s" : ""}:` : "Would take no firing alert now."));
      parts.push(list(answer.alerts, (a) => item(a.summary, `(${a.rule}${a.suppressed ? ", " + a.suppressed : ""})`)));
      if (answer.earlier.length) {
        parts.push(line("Its matchers also match these, but an earlier policy takes them first:"));
        parts.push(list(answer.earlier, (a) => item(a.summary, `(taken by ${a.by})`)));
      }
    }
    output.replaceChildren(...parts);
  }

  async function preview() {
    const mine = ++asked;
    try {
      const response = await fetch(form.dataset.preview, { method: "POST", body: new FormData(form),
        credentials: "same-origin", headers: { Accept: "application/json", "X-CSRFToken": W.csrfToken() } });
      if (mine !== asked) return; // a newer edit asked again meanwhile
      if (response.status !== 200 && response.status !== 400) throw new Error("preview answered " + response.status);
      show(await response.json());
    } catch (error) {
      console.warn("alert preview failed", error);
    }
  }

  let timer = null;
  function previewSoon() {
    clearTimeout(timer);
    timer = setTimeout(preview, 400);
  }

  button.hidden = false;
  button.addEventListener("click", preview);
  form.addEventListener("input", previewSoon);
  form.addEventListener("change", previewSoon);
  preview();
})();
