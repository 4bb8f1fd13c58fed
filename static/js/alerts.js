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

  W.connect({ onBatch: changed, onConnect: () => {} });
})();
