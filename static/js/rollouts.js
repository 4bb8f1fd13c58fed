/* Rollouts and a rollout's detail: the pages are rendered by the server (the one builder of their data);
   a rollout.changed message re-renders them, unless someone is typing a reason. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const shown = document.getElementById("rollout-state");
  const only = shown ? Number(shown.dataset.rollout) : null;

  function typing() {
    return Array.from(document.querySelectorAll("form.gate input[name=reason]")).some((input) => input.value);
  }

  function changed(messages) {
    const relevant = messages.filter((m) => m.type === "rollout.changed" && (only === null || m.payload.rollout === only));
    if (!relevant.length) return;
    if (shown && typing()) {
      shown.textContent = relevant[relevant.length - 1].payload.state + " (changed: reload to see why)";
      return;
    }
    window.location.reload();
  }

  W.connect({ onBatch: changed, onConnect: () => {} });
})();
