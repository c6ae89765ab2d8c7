// clustersync dashboard: live refresh, relative times and actions. No dependencies.
//
// - Live region: every `data-poll` ms the page fetches itself again with the header
//   X-Clustersync-Fragment: 1 and swaps the returned HTML into #live when it changed (text
//   of relative times and [data-volatile] elements aside, which are patched in place).
//   Never two requests at once; paused while the tab is hidden or by the Live button.
// - Relative times: <time data-ts="<epoch s>"> reads "in 5m" / "3s ago", kept current every
//   second against the server's clock (X-Clustersync-Now), as _html.relative() renders them.
// - Actions: <button data-action data-key [data-confirm]> POSTs {"key"} to actions/<action>
//   with the header X-Clustersync-Action: 1 (what the server's CSRF check requires), shows
//   the answer in a toast and refreshes at once. With data-confirm, a dialog asks first
//   (its button reads data-confirm-label, red unless data-confirm-tone="primary").
(() => {
  "use strict";

  const body = document.body;
  const base = body.dataset.base || "";
  const pollMs = Number(body.dataset.poll) || 2000;
  const live = document.getElementById("live");
  const toggle = document.getElementById("live-toggle");
  const VOLATILE = /(<(time|span)\b[^>]*\bdata-(?:ts|volatile)\b[^>]*>)[^<]*(<\/\2>)/g;

  let offsetMs = 0; // server clock minus this browser's clock
  let paused = false;
  let timer = 0;
  let inFlight = null;
  let lastOk = Date.now();
  let state = "live";
  let lastHtml = live ? normalize(live.innerHTML) : "";

  // -- times (mirrors _html.short_duration / relative) --------------------------------------

  function shortDuration(seconds) {
    const whole = Math.floor(seconds);
    if (whole < 60) return `${whole}s`;
    if (whole < 3600) return `${Math.floor(whole / 60)}m`;
    if (whole < 86400) {
      const h = Math.floor(whole / 3600);
      const m = Math.floor((whole % 3600) / 60);
      return m ? `${h}h ${m}m` : `${h}h`;
    }
    const d = Math.floor(whole / 86400);
    const h = Math.floor((whole % 86400) / 3600);
    return h ? `${d}d ${h}h` : `${d}d`;
  }

  function relative(seconds) {
    if (!Number.isFinite(seconds)) return "?";
    if (Math.abs(seconds) < 1) return "now";
    const text = shortDuration(Math.abs(seconds));
    return seconds > 0 ? `in ${text}` : `${text} ago`;
  }

  function nowSeconds() {
    return (Date.now() + offsetMs) / 1000;
  }

  function syncClock(text) {
    const serverNow = Number(text);
    if (serverNow > 0) offsetMs = serverNow * 1000 - Date.now();
  }

  function refreshTimes(root) {
    const now = nowSeconds();
    for (const el of (root || document).querySelectorAll("time[data-ts]")) {
      const text = relative(Number(el.dataset.ts) - now);
      if (el.textContent !== text) el.textContent = text;
    }
  }

  // -- live region ----------------------------------------------------------------------------

  function normalize(html) {
    return html.replace(VOLATILE, "$1$3");
  }

  function patchVolatile(html) {
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    const now = fresh.content.querySelectorAll("[data-volatile]");
    const old = live.querySelectorAll("[data-volatile]");
    now.forEach((el, i) => {
      if (old[i] && old[i].textContent !== el.textContent) old[i].textContent = el.textContent;
    });
  }

  function apply(html) {
    const normalized = normalize(html);
    if (normalized === lastHtml) {
      patchVolatile(html);
    } else {
      lastHtml = normalized;
      live.innerHTML = html;
      live.dispatchEvent(new CustomEvent("clustersync:updated", { bubbles: true }));
    }
    refreshTimes(live);
  }

  function setState(next) {
    state = next;
    if (!toggle) return;
    toggle.dataset.state = next;
    toggle.setAttribute("aria-pressed", String(next !== "paused"));
    const label = toggle.querySelector(".live-label");
    label.textContent = { live: "Live", paused: "Paused", error: "Reconnecting…" }[next];
    updateAge();
  }

  function updateAge() {
    if (!toggle) return;
    const age = (Date.now() - lastOk) / 1000;
    const stale = state !== "live" || age > (pollMs / 1000) * 2 + 1;
    toggle.querySelector(".live-age").textContent = stale ? `updated ${relative(-age)}` : "";
  }

  async function fetchFragment() {
    const response = await fetch(location.pathname + location.search, {
      headers: { "X-Clustersync-Fragment": "1" },
      cache: "no-store",
      credentials: "same-origin",
    });
    syncClock(response.headers.get("X-Clustersync-Now"));
    apply(await response.text());
    if (response.ok) {
      lastOk = Date.now();
      if (!paused) setState("live");
    } else if (!paused) {
      setState("error");
    }
  }

  function refresh() {
    if (!live) return Promise.resolve();
    if (!inFlight) {
      inFlight = fetchFragment()
        .catch(() => {
          if (!paused) setState("error");
        })
        .finally(() => {
          inFlight = null;
        });
    }
    return inFlight;
  }

  function plan() {
    clearTimeout(timer);
    if (paused || document.hidden || !live) return;
    timer = setTimeout(async () => {
      await refresh();
      plan();
    }, pollMs);
  }

  if (toggle) {
    toggle.addEventListener("click", () => {
      paused = !paused;
      setState(paused ? "paused" : "live");
      if (!paused) refresh().then(plan);
      else clearTimeout(timer);
    });
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !paused) refresh().then(plan);
    else clearTimeout(timer);
  });

  // -- actions --------------------------------------------------------------------------------

  function ask(question, confirmLabel, tone) {
    const dialog = document.getElementById("confirm");
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(question));
    }
    dialog.querySelector("#confirm-text").textContent = question;
    const ok = dialog.querySelector("#confirm-ok");
    ok.textContent = confirmLabel || "Confirm";
    ok.className = tone === "primary" ? "btn primary" : "btn danger solid";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
        once: true,
      });
      dialog.showModal();
    });
  }

  const ICON_OK = '<path d="M20 6 9 17l-5-5"/>';
  const ICON_ERROR = '<circle cx="12" cy="12" r="9"/><path d="M12 8v4M12 16h.01"/>';

  function toast(message, ok) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = ok ? "toast" : "toast error";
    item.setAttribute("role", ok ? "status" : "alert");
    item.innerHTML =
      '<svg class="icon" width="16" height="16" viewBox="0 0 24 24" fill="none"' +
      ' stroke="currentColor" stroke-width="2" stroke-linecap="round"' +
      ` stroke-linejoin="round" aria-hidden="true">${ok ? ICON_OK : ICON_ERROR}</svg>`;
    const text = document.createElement("span");
    text.textContent = message;
    item.appendChild(text);
    box.appendChild(item);
    setTimeout(() => {
      item.classList.add("leaving");
      setTimeout(() => item.remove(), 400);
    }, ok ? 4000 : 8000);
  }

  async function act(button) {
    const { action, key, confirm: question, confirmLabel, confirmTone } = button.dataset;
    if (question && !(await ask(question, confirmLabel, confirmTone))) return;
    button.disabled = true;
    button.classList.add("busy");
    try {
      const response = await fetch(`${base}/actions/${encodeURIComponent(action)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Clustersync-Action": "1" },
        body: JSON.stringify({ key }),
        credentials: "same-origin",
      });
      let answer = {};
      try {
        answer = await response.json();
      } catch (_) {
        answer = {};
      }
      const fallback = `${response.status} ${response.statusText}`;
      toast(answer.message || answer.error || fallback, response.ok);
    } catch (error) {
      toast(`The dashboard did not answer: ${error}`, false);
    } finally {
      button.disabled = false;
      button.classList.remove("busy");
      if (inFlight) await inFlight; // a refresh that started before the action: stale
      await refresh();
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && !button.disabled) {
      event.preventDefault();
      act(button);
    }
  });

  // -- start ----------------------------------------------------------------------------------

  if (live) syncClock(live.dataset.now);
  refreshTimes(document);
  setInterval(() => {
    refreshTimes(document);
    updateAge();
  }, 1000);
  setState("live");
  plan();
})();
