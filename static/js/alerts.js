/* The alerts page is rendered by the server (the one builder of its data); an alerts.changed message
   re-renders it, unless someone is filling in the silence form. */
(function () {
  "use strict";
  const W = window.Weathervane;

  function typing() {
    return Array.from(document.querySelectorAll("#silence-form input[type=text]")).some(
      (input) => input.value && input === document.activeElement);
  }

  function changed(messages) {
    if (!messages.some((m) => m.type === "alerts.changed") || typing()) return;
    window.location.reload();
  }

  /* A tick may have run between this page's render and its socket opening (a silence just made is applied by
     the scheduler's next tick): compare once connected, and re-render when something changed meanwhile. */
  async function resync() {
    const rendered = document.getElementById("alerts-title").dataset.version;
    try {
      const current = await W.getJSON("/dashboard-data/alerts/");
      if (current.version !== rendered && !typing()) window.location.reload();
    } catch (problem) {
      /* the next alerts.changed message re-renders the page anyway */
    }
  }

  W.connect({ onBatch: changed, onConnect: resync });
})();
