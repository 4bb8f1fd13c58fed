/* One load test: live progress while it runs, Stop, and its charts once it ended. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const FINAL = ["finished", "stopped", "aborted", "failed"];
  const doc = W.initialData();
  const live = document.getElementById("lt-live");
  const running = !FINAL.includes(doc.status);

  function apply(payload) {
    if (payload.run !== doc.run) return;
    if (FINAL.includes(payload.status)) {
      if (running) window.location.reload(); // the server renders the figures and charts
      return;
    }
    const progress = payload.progress || {};
    live.querySelector("[data-field=status]").textContent = payload.status_label;
    live.querySelector("[data-field=phase]").textContent = progress.phase || "";
    const bar = document.getElementById("lt-progress");
    if (progress.planned) bar.max = progress.planned;
    bar.value = progress.done || 0;
    document.getElementById("lt-done").textContent = progress.done || 0;
    document.getElementById("lt-rps").textContent = W.rate(progress.rps || 0);
    document.getElementById("lt-errors").textContent = progress.errors || 0;
    document.getElementById("lt-elapsed").textContent = (progress.elapsed_s || 0).toFixed(1);
  }

  const stop = document.getElementById("lt-stop");
  if (stop) {
    stop.addEventListener("click", async () => {
      stop.disabled = true;
      await fetch(`/api/v1/load-tests/${doc.run}/stop/`, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": W.csrfToken(), Accept: "application/json" },
      });
    });
  }

  if (!running) {
    window.WeathervaneLoadTestCharts.draw(doc);
    W.connect({ onBatch() {} }); // the page stays signed-in aware, like every other
    return;
  }
  W.connect({
    onConnect() {
      W.getJSON(`/dashboard-data/load-tests/${doc.run}/`).then((fresh) =>
        apply({ run: fresh.run, status: fresh.status, status_label: fresh.status_label, progress: fresh.progress }));
    },
    onBatch(messages) {
      messages.filter((m) => m.type === "loadtest.progress").forEach((m) => apply(m.payload));
    },
  });
})();
