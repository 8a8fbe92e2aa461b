// The session player: a stored session's audio as a waveform (wavesurfer.js), its utterances as
// regions on it, and its transcript word by word, aligned in session time: click a word to hear
// just that word; the word being played is highlighted.
"use strict";

const sessionPlayer = (() => {
  const list = document.getElementById("stored");
  const title = document.getElementById("player-title");
  const words = document.getElementById("words");
  const controls = document.querySelector("#player-panel .controls");
  const clockEl = document.getElementById("clock");
  const regions = WaveSurfer.Regions.create();
  const ws = WaveSurfer.create({
    container: "#waveform", height: 96, waveColor: "#9bb7d4", progressColor: "#2f7ed8",
    cursorColor: "#c0392b", normalize: true, plugins: [regions],
  });
  let spans = [];        // [{start, end, node}] in time order
  let current = null;    // the session shown
  let generation = 0;    // which open() is the latest: an older one's results are dropped
  let lastPlayed = null; // {start, end}: what the last click asked to hear

  document.getElementById("play").addEventListener("click", () => ws.playPause());
  ws.on("timeupdate", (t) => {
    clockEl.textContent = `${t.toFixed(2)} / ${ws.getDuration().toFixed(2)} s`;
    for (const s of spans) s.node.classList.toggle("playing", t >= s.start && t < s.end);
  });

  function hear(start, end) {
    lastPlayed = { start, end };
    ws.setTime(start);
    ws.play(start, end).catch((err) => console.info("voxbus player: cannot play here:", err.message));
  }

  function word(text, start, end) {
    const node = el("span", "word", text);
    node.dataset.start = start;
    node.dataset.end = end;
    node.title = `${start.toFixed(2)}–${end.toFixed(2)} s`;
    node.addEventListener("click", () => hear(start, end));
    spans.push({ start, end, node });
    return node;
  }

  async function open(session) {
    const mine = ++generation;
    current = session;
    for (const item of list.children) item.classList.toggle("chosen", item.dataset.session === session);
    title.textContent = `${session}: loading…`;
    words.replaceChildren();
    regions.clearRegions();
    spans = [];
    try {
      const [info, audio] = await Promise.all([
        voxbusApi.get(`/dashboard/api/sessions/${encodeURIComponent(session)}`),
        voxbusApi.get(`/dashboard/api/sessions/${encodeURIComponent(session)}/audio.wav`, "blob"),
      ]);
      if (mine !== generation) return; // (another one was picked meanwhile)
      await ws.loadBlob(audio);
      if (mine !== generation) return;
      title.textContent = `${session}: ${info.audio_s.toFixed(1)} s of audio, ${info.frames} frames, ` +
        `${info.utterances.length} utterance(s)`;
      controls.hidden = false;
      for (const u of info.utterances) {
        regions.addRegion({ start: u.start, end: u.end, color: "rgba(47,126,216,0.12)", drag: false, resize: false });
        const line = el("p", "utterance");
        line.dataset.utterance = u.utterance;
        line.append(el("span", "at", `${u.start.toFixed(2)} s`));
        if (u.words && u.words.length) {
          for (const w of u.words) line.append(word(w.word, w.start, w.end), document.createTextNode(" "));
        } else {
          line.append(word(u.text, u.start, u.end)); // (no word timings: the utterance is the unit)
        }
        words.append(line);
      }
      if (!info.utterances.length) words.append(el("p", "empty", "No transcript is stored for this session."));
    } catch (err) {
      if (mine === generation && err.name !== "AbortError") title.textContent = `${session}: ${err.message}`;
    }
  }

  async function refresh() {
    try {
      const { sessions } = await voxbusApi.get("/dashboard/api/sessions?since=24h");
      list.replaceChildren(...sessions.map((s) => {
        const item = el("li");
        item.dataset.session = s.session;
        item.classList.toggle("chosen", s.session === current);
        const when = s.started ? clock(s.started) : "";
        item.append(el("span", "sid", s.session), el("span", "muted",
          ` ${when}${s.utterances != null ? ` · ${s.utterances} utt.` : " · open"}${s.errors ? ` · ${s.errors} err.` : ""}`));
        item.addEventListener("click", () => open(s.session));
        return item;
      }));
      if (!sessions.length) list.append(el("li", "empty", "No session stored in the last 24 h."));
    } catch (err) {
      list.replaceChildren(el("li", "error", err.message));
    }
  }

  document.getElementById("refresh-sessions").addEventListener("click", refresh);
  // A session shown while it was still open is shown again once it is transcribed.
  const finished = (session) => { if (session === current) open(session); };
  return { open, refresh, finished, hear, wavesurfer: ws, get lastPlayed() { return lastPlayed; } };
})();
