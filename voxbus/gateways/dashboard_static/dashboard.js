// Wiring: the live feed to the panels, the API key form, and the connection pill.
"use strict";

(() => {
  const pill = document.getElementById("connection");
  const form = document.getElementById("key-form");
  let refreshSoon = null;

  const handlers = {
    hello: (h) => { // (a new stream replays the history: start the timeline over)
      document.getElementById("deployment").textContent = `subjects ${h.prefix}.*`;
      eventsPanel.reset();
    },
    partial: liveSessions.partial,
    transcript: liveSessions.transcript,
    reply: liveSessions.reply,
    control: (ev) => {
      liveSessions.control(ev);
      if (ev.kind === "transcribed") sessionPlayer.finished(ev.session);
      if ((ev.kind === "transcribed" || ev.kind === "start") && !refreshSoon) { // (the stored list changed:
        refreshSoon = setTimeout(() => { refreshSoon = null; sessionPlayer.refresh(); }, 3000); // at most every 3 s)
      }
    },
    admin: eventsPanel.admin,
    status: (s) => { modelsPanel.status(s); latencyChart.status(s); },
    lagged: () => console.warn("voxbus feed: this tab fell behind; reconnecting"),
  };

  function dispatch(name, data) {
    try {
      handlers[name]?.(data);
    } catch (err) {
      console.error(`voxbus dashboard: handling ${name}:`, err);
    }
  }

  function setState(state) {
    pill.dataset.state = state;
    pill.textContent = { live: "live", connecting: "connecting", offline: "reconnecting", locked: "API key needed" }[state];
  }

  voxbusApi.needKey(() => { form.hidden = false; document.getElementById("key-input").focus(); });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    voxbusApi.setKey(document.getElementById("key-input").value);
    form.hidden = true;
    start();
  });

  function start() {
    voxbusApi.follow("/dashboard/api/feed", dispatch, setState);
    sessionPlayer.refresh();
  }
  setInterval(eventsPanel.redraw, 30000); // (the timeline's right edge is "now")
  window.voxbus = { liveSessions, modelsPanel, sessionPlayer, eventsPanel };
  start();
})();
