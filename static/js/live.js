/* Shared by every dashboard page: the live socket (reconnect with backoff,
   backfill on every (re)connect), number formats (the same as routing/formats.py,
   line for line: "5.2 %", "120 ms", "0.40/s", "12,345"), times in the viewer's
   locale and time zone, and small fetch helpers. */
(function () {
  "use strict";

  const DASH = "–";
  const MIN_DELAY_MS = 500;
  const MAX_DELAY_MS = 15000;

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const shortFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function missing(value) {
    return value === null || value === undefined || !Number.isFinite(Number(value));
  }

  function ms(value) {
    if (missing(value)) return DASH;
    if (value >= 1000) return (value / 1000).toFixed(2) + " s";
    return value < 10 ? value.toFixed(1) + " ms" : Math.round(value) + " ms";
  }

  function pct(ratio) {
    return missing(ratio) ? DASH : (ratio * 100).toFixed(1) + " %";
  }

  /* A value already in percent (a chart's axis or tooltip): 5.23 → "5.2 %". */
  function percent(value) {
    return missing(value) ? DASH : Number(value).toFixed(1) + " %";
  }

  function rate(value) {
    if (missing(value)) return DASH;
    if (value === 0) return "0/s";
    if (value < 0.01) return "< 0.01/s"; // not "0.00/s": there was traffic
    return value < 10 ? value.toFixed(2) + "/s" : value.toFixed(1) + "/s";
  }

  /* Decimals that tell apart axis ticks `step` apart (Chart.js steps like 0.005, 0.25 or 20). */
  function stepDecimals(step) {
    let decimals = 0;
    while (decimals < 6 && step > 0 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) {
      decimals += 1;
    }
    return decimals;
  }

  /* A Chart.js y-axis tick callback: `value unit` with just the decimals the ticks' step needs, so
     neighbouring ticks never read alike at small values; zero reads "0". Latency axes (unit "ms")
     switch to seconds from 1000 ms. */
  function axisTicks(unit) {
    return function (value, index, ticks) {
      const step = ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : 0;
      if (value === 0) return "0" + (unit === "/s" ? unit : " " + unit);
      if (unit === "ms" && value >= 1000) return (value / 1000).toFixed(stepDecimals(step / 1000)) + " s";
      return value.toFixed(stepDecimals(step)) + (unit === "/s" ? unit : " " + unit);
    };
  }

  /* A count or a figure shown whole: 12345.6 → "12,346". */
  function whole(value) {
    return missing(value) ? DASH : Math.round(value).toLocaleString("en-US");
  }

  /* Rewrite every <time datetime> under root into the viewer's time zone. */
  function localizeTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = fullFormat.format(when);
        el.title = el.getAttribute("datetime");
      }
    });
  }

  function timeElement(iso) {
    const el = document.createElement("time");
    el.setAttribute("datetime", iso);
    el.textContent = iso;
    localizeTimes({ querySelectorAll: () => [el] });
    return el;
  }

  function initialData() {
    const node = document.getElementById("initial-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  /* GET JSON from one of our own views; a lost session sends the page to the login form. */
  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.redirected || response.status === 401 || response.status === 403) {
      window.location.reload();
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response.json();
  }

  function setStatus(state, text) {
    const el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  /* Open /ws/live/ and keep it open. onBatch(messages) gets each batch;
     onConnect() runs on every (re)connect (and when the server dropped
     messages) so the page can backfill what it missed. */
  function connect(options) {
    let delay = MIN_DELAY_MS;
    let opened = false;

    function open() {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + window.location.host + "/ws/live/");
      opened = false;
      socket.addEventListener("open", () => {
        opened = true;
        delay = MIN_DELAY_MS;
        setStatus("live", "Live");
        if (options.onConnect) options.onConnect();
      });
      socket.addEventListener("message", (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type !== "batch") return;
        showFiringCount(frame.messages);
        options.onBatch(frame.messages);
        if (frame.dropped && options.onConnect) options.onConnect();
      });
      socket.addEventListener("close", (event) => {
        setStatus("offline", "Reconnecting…");
        if (event.code === 4401 || event.code === 4403 || !opened) checkSession();
        const wait = delay + Math.random() * delay * 0.5; // jitter: not every tab at once
        delay = Math.min(delay * 2, MAX_DELAY_MS);
        window.setTimeout(open, wait);
      });
    }

    setStatus("connecting", "Connecting…");
    open();
  }

  /* The navigation bar's firing count, on every live page. */
  function showFiringCount(messages) {
    const badge = document.getElementById("nav-alerts-firing");
    const last = messages.filter((m) => m.type === "alerts.changed").pop();
    if (!badge || !last) return;
    badge.textContent = String(last.payload.firing);
    badge.classList.toggle("firing", last.payload.firing > 0);
  }

  /* After a refused or closed socket: if the session is gone, show the login form. */
  function checkSession() {
    fetch(window.location.href, { credentials: "same-origin", redirect: "manual", method: "HEAD" })
      .then((response) => {
        if (response.type === "opaqueredirect" || response.status === 403) window.location.reload();
      })
      .catch(() => {});
  }

  /* Run fn at most once per `seconds`, trailing: calls in between are folded into one. */
  function throttle(fn, seconds) {
    let timer = null;
    let last = 0;
    return function () {
      if (timer) return;
      const wait = Math.max(0, last + seconds * 1000 - Date.now());
      timer = window.setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    };
  }

  window.Weathervane = {
    ms, pct, percent, rate, whole, axisTicks, localizeTimes, timeElement, initialData, csrfToken, getJSON, connect, throttle,
    timeFormat, shortFormat, dayFormat, fullFormat,
  };

  document.addEventListener("DOMContentLoaded", () => localizeTimes(document));
})();
