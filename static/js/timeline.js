/* Timeline: one page of operational events, newest first, filtered as the URL says. On the first page new
   events arrive live: the page re-reads its JSON, so filters, links and folded runs ("×12") are the server's
   (dashboard/timeline.py), live and on reload alike. */
(function () {
  "use strict";
  const W = window.Weathervane;
  const REFRESH_S = 1;

  const list = document.getElementById("timeline");
  const query = new URLSearchParams(window.location.search);
  const firstPage = !query.get("before");
  const signature = (events) => events.map((e) => `${e.id}:${e.run}`).join(",");
  let shown = signature(W.initialData().events || []);

  function item(event, folded) {
    const li = document.createElement("li");
    li.className = "event kind-" + event.kind;
    li.dataset.id = event.id;
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = event.kind_label || event.kind;
    const text = document.createElement("span");
    text.className = "message";
    text.textContent = event.message;
    const about = document.createElement("span");
    about.className = "about";
    if (event.actor) {
      const actor = document.createElement("span");
      actor.className = "actor";
      actor.textContent = "by " + event.actor;
      about.append(actor);
    }
    for (const link of event.links || []) {
      const a = document.createElement("a");
      a.className = "object";
      a.href = link.url;
      a.textContent = link.label;
      about.append(" ", a);
    }
    li.append(W.timeElement(event.at), " ", kind, " ", text, " ", about);
    if (folded && folded.length) li.append(" ", run(event, folded));
    return li;
  }

  /* "×12": the rest of a flapping run, behind a disclosure (as the server renders it). */
  function run(event, folded) {
    const details = document.createElement("details");
    details.className = "run";
    const summary = document.createElement("summary");
    summary.textContent = "×" + event.run;
    summary.setAttribute("aria-label", `${event.run} events like this in a row; show the other ${folded.length}`);
    const inner = document.createElement("ol");
    inner.className = "folded";
    inner.append(...folded.map((e) => item(e)));
    details.append(summary, inner);
    return details;
  }

  function render(events) {
    const groups = [];
    for (const event of events) {
      if (event.run || !groups.length) groups.push({ head: event, folded: [] });
      else groups[groups.length - 1].folded.push(event);
    }
    list.replaceChildren(...groups.map((g) => item(g.head, g.folded)));
    document.getElementById("empty-state").hidden = events.length > 0;
  }

  async function refresh() {
    try {
      const fresh = await W.getJSON("/dashboard-data/timeline/?" + query.toString());
      if (signature(fresh.events) === shown) return;
      shown = signature(fresh.events);
      render(fresh.events);
    } catch (error) {
      console.warn("timeline refresh failed", error);
    }
  }
  const refreshSoon = W.throttle(refresh, REFRESH_S);

  W.connect({
    onBatch: (messages) => {
      if (firstPage && messages.some((m) => m.type === "timeline.event")) refreshSoon();
    },
    onConnect: () => { if (firstPage) refresh(); },
  });
})();
