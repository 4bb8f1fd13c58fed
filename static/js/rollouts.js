/* The rollouts list: rendered by the server (the one builder of its data); a rollout.changed message re-renders it. */
(function () {
  "use strict";
  const W = window.Weathervane;

  function changed(messages) {
    if (messages.some((m) => m.type === "rollout.changed")) window.location.reload();
  }

  W.connect({ onBatch: changed, onConnect: () => {} });
})();
