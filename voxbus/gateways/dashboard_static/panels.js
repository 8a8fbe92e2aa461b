// The live panels: sessions with their transcripts and interim text, models and processes,
// per-stage latency (uPlot), and the model lifecycle timeline. Every string from the bus goes
// in through textContent, never as HTML.
"use strict";

const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
const mib = (bytes) => (bytes ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : "–");
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });

// -- live sessions ------------------------------------------------------------------------
const liveSessions = (() => {
  const KEEP = 12;               // cards shown at most; the oldest ended ones go first
  const box = document.getElementById("sessions");
  const cards = new Map();       // session -> {card, lines, interim, state, touched}

  function card(session) {
    let c = cards.get(session);
    if (c) { c.touched = Date.now(); return c; }
    box.querySelector(".empty")?.remove();
    const node = el("article", "session");
    node.dataset.session = session;
    const head = el("header");
    head.append(el("strong", "sid", session), el("span", "badge", "live"));
    const lines = el("div", "lines");
    const interim = el("p", "interim");
    node.append(head, lines, interim);
    box.prepend(node);
    c = { node, badge: head.lastChild, lines, interim, finals: new Map(), replies: new Map(), touched: Date.now() };
    cards.set(session, c);
    prune();
    return c;
  }

  function prune() {
    if (cards.size <= KEEP) return;
    const old = [...cards.entries()].sort((a, b) => (a[1].node.dataset.state === "ended" ? 0 : 1)
      - (b[1].node.dataset.state === "ended" ? 0 : 1) || a[1].touched - b[1].touched);
    for (const [sid, c] of old.slice(0, cards.size - KEEP)) { c.node.remove(); cards.delete(sid); }
  }

  function setState(c, state, label) {
    c.node.dataset.state = state;
    c.badge.textContent = label || state;
  }

  return {
    partial(p) {
      const c = card(p.session);
      if (c.finals.has(p.utterance)) return; // (a late interim after its final)
      c.interim.replaceChildren(el("b", "stable", p.stable), document.createTextNode(p.text.slice(p.stable.length)));
      c.interim.dataset.utterance = p.utterance;
    },
    transcript(t) {
      const c = card(t.session);
      c.lines.querySelector(`.final[data-utterance="${t.utterance}"]`)?.remove(); // (sent twice: keep one)
      const line = el("p", "final");
      line.dataset.utterance = t.utterance;
      line.append(el("span", "at", `${t.start.toFixed(1)} s`), document.createTextNode(t.text));
      const later = [...c.lines.children].find((n) => Number(n.dataset.utterance) > t.utterance);
      c.lines.insertBefore(line, later || null);
      c.finals.set(t.utterance, t.text);
      if (c.interim.dataset.utterance == t.utterance) c.interim.replaceChildren();
    },
    reply(r) {
      const c = card(r.session);
      let line = c.replies.get(r.turn);
      if (!line) {
        line = el("p", "reply");
        line.append(el("span", "at", "reply"), el("span", "text"));
        c.replies.set(r.turn, line);
        c.lines.append(line);
      }
      line.lastChild.textContent += r.text;
    },
    control(ev) {
      if (ev.kind === "start") setState(card(ev.session), "live");
      else if (ev.kind === "transcribed" || ev.kind === "end") setState(card(ev.session), "ended", "ended");
      else if (ev.kind === "error") {
        const c = card(ev.session);
        c.lines.append(el("p", "error", `${ev.code}: ${ev.message}`));
      }
      document.getElementById("live-count").textContent =
        `(${[...cards.values()].filter((c) => c.node.dataset.state !== "ended").length} live)`;
    },
  };
})();

// -- models, memory and processes ---------------------------------------------------------
const modelsPanel = (() => {
  const body = document.querySelector("#models tbody");
  const procs = document.querySelector("#processes tbody");
  const memory = document.getElementById("memory");

  function bar(label, used, budget) {
    const row = el("div", "bar");
    const fill = el("span", "fill");
    fill.style.width = `${budget ? Math.min(100, (100 * used) / budget) : 0}%`;
    if (budget && used > 0.9 * budget) row.classList.add("pressure");
    const track = el("span", "track");
    track.append(fill);
    row.append(el("span", "label", label), track,
      el("span", "value", budget ? `${mib(used)} of ${mib(budget)}` : `${mib(used)} (no budget)`));
    return row;
  }

  return {
    status(s) {
      if (s.models === null) {
        body.replaceChildren(el("tr", "", ""));
        body.firstChild.append(Object.assign(el("td", "empty", "no ModelManager answers"), { colSpan: 8 }));
      } else {
        const several = new Set(s.models.map((m) => m.manager)).size > 1;
        body.replaceChildren(...s.models.map((m) => {
          const tr = el("tr");
          tr.dataset.model = m.id;
          tr.dataset.state = m.state;
          tr.dataset.manager = m.manager;
          const p50 = m.metrics.inference_ms_p50 ? `${m.metrics.inference_ms_p50.toFixed(0)} ms` : "–";
          for (const [text, cls] of [[several ? `${m.id} @ ${m.manager}` : m.id, "id"], [m.kind], [m.state, `state ${m.state}`], [mib(m.ram_bytes)],
            [mib(m.vram_bytes)], [String(m.queue)], [String(m.metrics.requests)], [p50]]) tr.append(el("td", cls, text));
          return tr;
        }));
      }
      // Each manager's loaded models against its own budgets (from its latest resource snapshot).
      const managers = [...new Set((s.models || []).map((m) => m.manager))];
      const rows = [];
      for (const manager of managers) {
        const loaded = s.models.filter((m) => m.manager === manager && m.state === "loaded");
        const ram = loaded.reduce((a, m) => a + m.ram_bytes, 0);
        const vram = loaded.reduce((a, m) => a + m.vram_bytes, 0);
        const r = (s.resources || {})[manager] || {};
        const tag = managers.length > 1 ? ` ${manager}` : "";
        rows.push(bar(`RAM${tag}`, ram, r.ram_budget_bytes || 0));
        if (vram || r.vram_budget_bytes) rows.push(bar(`VRAM${tag}`, vram, r.vram_budget_bytes || 0));
      }
      memory.replaceChildren(...rows);
      procs.replaceChildren(...s.processes.map((p) => {
        const tr = el("tr");
        tr.dataset.kind = p.kind;
        const up = p.uptime_s == null ? "–" : p.uptime_s > 3600 ? `${(p.uptime_s / 3600).toFixed(1)} h` : `${Math.round(p.uptime_s)} s`;
        for (const text of [p.kind + (p.standby ? " (standby)" : ""), p.host, up, p.sessions ?? "–", p.pending ?? "–",
          p.healthy ? "ok" : "unhealthy"]) tr.append(el("td", "", String(text)));
        return tr;
      }));
    },
  };
})();

// -- latency by stage ---------------------------------------------------------------------
const latencyChart = (() => {
  const WINDOW = 600;   // seconds of history kept
  const names = ["STT inference", "STT queue", "LLM inference", "TTS inference", "STT lag"];
  const data = [[], ...names.map(() => [])];
  const box = document.getElementById("latency");
  let last = 0;           // the newest point's time: an older snapshot (sent late) is skipped
  const colors = ["#2f7ed8", "#8bbc21", "#910000", "#f28f43", "#77a1e5"];
  const plot = new uPlot({
    width: Math.max(320, box.clientWidth || 640), height: 220,
    series: [{}, ...names.map((label, i) => ({ label, stroke: colors[i], width: 2, spanGaps: true,
      value: (u, v) => (v == null ? "–" : `${v.toFixed(0)} ms`) }))],
    axes: [{}, { values: (u, vals) => vals.map((v) => `${v} ms`), size: 60 }],
    scales: { x: { time: true } },
  }, data, box);
  new ResizeObserver(() => plot.setSize({ width: Math.max(320, box.clientWidth), height: 220 })).observe(box);

  const worst = (models, kind, key) => {
    const xs = (models || []).filter((m) => m.kind === kind && m.metrics.requests > 0).map((m) => m.metrics[key]);
    return xs.length ? Math.max(...xs) : null;
  };
  return {
    status(s) {
      if (s.ts <= last) return;
      last = s.ts;
      const stt = (s.processes || []).filter((p) => p.kind === "stt" && p.lag_ms != null).map((p) => p.lag_ms);
      const row = [s.ts, worst(s.models, "stt", "inference_ms_p50"), worst(s.models, "stt", "queue_ms_p50"),
        worst(s.models, "llm", "inference_ms_p50"), worst(s.models, "tts", "inference_ms_p50"),
        stt.length ? Math.max(...stt) : null];
      row.forEach((v, i) => data[i].push(v));
      while (data[0].length && data[0][0] < s.ts - WINDOW) data.forEach((d) => d.shift());
      plot.setData(data);
    },
  };
})();

// -- model lifecycle: an SVG lane per model (spans while loaded) and the event list --------
const eventsPanel = (() => {
  const list = document.getElementById("events");
  const svg = document.getElementById("lanes");
  const SPAN_MAX = 3600, SPAN_MIN = 300;  // the lanes cover the events shown: 5 min to 1 h
  const events = [];
  const NS = "http://www.w3.org/2000/svg";
  const color = { loaded: "#2e9d4f", loading: "#2f7ed8", evicted: "#e08a00", unloaded: "#888",
    crashed: "#c0392b", failed: "#c0392b", quarantined: "#7d3c98", refused: "#e08a00" };

  function drawLanes() {
    const now = Date.now() / 1000;
    const earliest = events.length ? Math.min(...events.map((e) => e.ts)) : now;
    const SPAN = Math.min(SPAN_MAX, Math.max(SPAN_MIN, (now - earliest) * 1.1));
    const several = new Set(events.map((e) => e.manager)).size > 1;
    const laneOf = (e) => (several ? `${e.model} @ ${e.manager}` : e.model); // (a lane per model and manager)
    const models = [...new Set(events.filter((e) => e.model && e.type === "ModelEvent").map(laneOf))];
    const width = svg.clientWidth || 400, lane = 18, left = 110;
    svg.replaceChildren();
    svg.setAttribute("height", String(models.length * lane + 18));
    const x = (ts) => left + ((width - left - 4) * (ts - (now - SPAN))) / SPAN;
    for (const [label, at, anchor] of [[`−${Math.round(SPAN / 60)} min`, left, "start"], ["now", width - 4, "end"]]) {
      const t = document.createElementNS(NS, "text");
      Object.entries({ x: at, y: models.length * lane + 14, class: "lane-label", "text-anchor": anchor })
        .forEach(([k, v]) => t.setAttribute(k, v));
      t.textContent = label;
      svg.append(t);
    }
    models.forEach((model, i) => {
      const y = i * lane + 2;
      const name = document.createElementNS(NS, "text");
      Object.entries({ x: 0, y: y + 12, class: "lane-label" }).forEach(([k, v]) => name.setAttribute(k, v));
      name.textContent = model;
      svg.append(name);
      let since = null;
      const mine = events.filter((e) => e.type === "ModelEvent" && laneOf(e) === model);
      for (const e of [...mine, { event: "now", ts: now }]) {
        if (e.event === "loaded") since = since ?? e.ts;
        else if (since !== null && e.event !== "loading") {
          const r = document.createElementNS(NS, "rect");
          Object.entries({ x: x(Math.max(since, now - SPAN)), y: y + 3, height: lane - 8, class: "loaded-span",
            width: Math.max(1, x(e.ts) - x(Math.max(since, now - SPAN))) }).forEach(([k, v]) => r.setAttribute(k, v));
          svg.append(r);
          since = null;
        }
        if (e.event !== "now" && e.ts > now - SPAN) {
          const dot = document.createElementNS(NS, "circle");
          Object.entries({ cx: x(e.ts), cy: y + lane / 2 - 1, r: 4, fill: color[e.event] || "#555" })
            .forEach(([k, v]) => dot.setAttribute(k, v));
          const tip = document.createElementNS(NS, "title");
          tip.textContent = `${clock(e.ts)} ${e.line}`;
          dot.append(tip);
          svg.append(dot);
        }
      }
    });
  }

  return {
    admin(e) {
      if (e.type === "ResourceSnapshot") return; // (the memory bars show those)
      events.push(e);
      if (events.length > 500) events.shift();
      const item = el("li");
      item.dataset.event = e.event || e.type;
      item.append(el("time", "", clock(e.ts)), el("span", "dot"), el("span", "", e.line));
      item.children[1].style.background = color[e.event] || "#555";
      list.prepend(item);
      while (list.children.length > 300) list.lastChild.remove();
      drawLanes();
    },
    redraw: drawLanes,
    reset() { events.length = 0; list.replaceChildren(); drawLanes(); },
  };
})();
