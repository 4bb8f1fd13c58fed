/* Timeline: operational events, newest first, prepended as they happen. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const MAX_EVENTS = 200;
  const KIND_LABELS = {
    weights: "Weights changed", health: "Health changed", circuit_open: "Circuit opened",
    circuit_half_open: "Circuit half-open", circuit_closed: "Circuit closed", key_invalid: "Key marked invalid",
    key_rate_limited: "Key rate-limited", key_active: "Key active again", key_suspect: "Key suspect",
    rollout: "Rollout changed",
  };

  const list = document.getElementById("timeline");
  const seen = new Set();

  function keyOf(event) {
    // Live payloads carry no id; the same happening has the same time, kind and message.
    return `${Date.parse(event.at)}|${event.kind}|${event.message}`;
  }

  function item(event) {
    const li = document.createElement("li");
    li.className = "event kind-" + event.kind;
    if (event.id) li.dataset.id = event.id;
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = event.kind_label || KIND_LABELS[event.kind] || event.kind;
    const text = document.createElement("span");
    text.className = "message";
    text.textContent = event.message;
    li.append(W.timeElement(event.at), " ", kind, " ", text);
    return li;
  }

  function add(event, atTop) {
    const key = keyOf(event);
    if (seen.has(key)) return;
    seen.add(key);
    if (atTop) list.prepend(item(event));
    else list.append(item(event));
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    document.getElementById("empty-state").hidden = true;
  }

  /* Backfill: put in what the socket missed, keeping newest first. */
  async function refresh() {
    try {
      const fresh = await W.getJSON("/dashboard-data/timeline/");
      const missing = fresh.events.filter((e) => !seen.has(keyOf(e)));
      if (!missing.length) return;
      fresh.events.forEach((e) => seen.add(keyOf(e)));
      list.replaceChildren(...fresh.events.map(item));
      document.getElementById("empty-state").hidden = fresh.events.length > 0;
    } catch (error) {
      console.warn("timeline refresh failed", error);
    }
  }

  (W.initialData().events || []).forEach((e) => seen.add(keyOf(e)));
  W.connect({
    onBatch: (messages) => messages.filter((m) => m.type === "timeline.event").forEach((m) => add(m.payload, true)),
    onConnect: refresh,
  });
})();
