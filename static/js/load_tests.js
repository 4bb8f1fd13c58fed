/* Load tests: start a run (estimate first, then confirm), and watch the list's progress live. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const form = document.getElementById("loadtest-form");

  function body(confirm) {
    const value = (name) => form.elements[name].value.trim();
    const [kind, name] = value("target").split(/:(.*)/s);
    const data = { [kind]: name, profile: value("profile"), requests: Number(value("requests")),
      duration_s: Number(value("duration_s")), max_tokens: Number(value("max_tokens")),
      stream: form.elements.stream.checked, confirm };
    if (value("concurrency")) data.concurrency = value("concurrency").split(",").map((c) => Number(c.trim()));
    if (value("rate")) data.rate = Number(value("rate"));
    const thresholds = value("thresholds").split("\n").map((t) => t.trim()).filter(Boolean);
    if (thresholds.length) data.thresholds = thresholds;
    return data;
  }

  async function post(data) {
    const response = await fetch("/api/v1/load-tests/", {
      method: "POST", credentials: "same-origin", body: JSON.stringify(data),
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": W.csrfToken() },
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(describe(answer) || "The server answered " + response.status);
    return answer;
  }

  function describe(answer) {
    return Object.entries(answer).map(([field, problems]) =>
      (field === "detail" ? "" : field + ": ") + [].concat(problems).join(" ")).join("; ");
  }

  function showError(text) {
    document.getElementById("lt-error").textContent = text;
  }

  function setUp() {
    if (!form) return;
    const confirmBox = document.getElementById("lt-confirm");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError("");
      try {
        const estimate = await post(body(false));
        document.getElementById("lt-cost").textContent = "$" + Number(estimate.estimated_max_cost).toFixed(4);
        confirmBox.hidden = false;
      } catch (problem) {
        showError(problem.message);
      }
    });
    document.getElementById("lt-cancel").addEventListener("click", () => { confirmBox.hidden = true; });
    document.getElementById("lt-start").addEventListener("click", async () => {
      showError("");
      try {
        const run = await post(body(true));
        window.location.href = "/load-tests/" + run.id + "/";
      } catch (problem) {
        confirmBox.hidden = true;
        showError(problem.message);
      }
    });
  }

  function applyProgress(payload) {
    const row = document.querySelector(`tr[data-run="${payload.run}"]`);
    if (!row) return;
    const progress = payload.progress || {};
    row.querySelector("[data-field=status]").textContent = payload.status_label;
    row.querySelector("[data-field=progress]").textContent = (progress.done || 0) + " / " + (progress.planned || "–");
  }

  setUp();
  W.connect({
    onBatch(messages) {
      messages.filter((m) => m.type === "loadtest.progress").forEach((m) => applyProgress(m.payload));
    },
  });
})();
