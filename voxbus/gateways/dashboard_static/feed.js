// The gateway's API as the page uses it: JSON reads and the live event stream, both with the
// API key when the gateway has one (fetch, not EventSource, because EventSource cannot send an
// Authorization header). The stream reconnects by itself, backing off up to 10 s.
"use strict";

const voxbusApi = (() => {
  const KEY = "voxbus-api-key";
  let onNeedKey = () => {};

  function headers() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function get(path, as = "json") {
    const res = await fetch(path, { headers: headers() });
    if (res.status === 401) {
      onNeedKey();
      throw new Error("the gateway wants an API key");
    }
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return as === "blob" ? res.blob() : res.json();
  }

  // Parse text/event-stream from a fetch body: blocks end with a blank line; `event:` and
  // `data:` fields; comments (":") ignored.
  async function readEvents(body, dispatch) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (!data.length) continue;
        let parsed;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch (err) { // (one unreadable event is skipped, not the stream)
          console.warn(`voxbus feed: an unreadable ${name} event:`, err.message);
          continue;
        }
        dispatch(name, parsed);
      }
    }
  }

  function follow(path, dispatch, onState) {
    let delay = 500;
    (async function loop() {
      for (;;) {
        onState("connecting");
        try {
          const res = await fetch(path, { headers: { ...headers(), Accept: "text/event-stream" } });
          if (res.status === 401) {
            onState("locked");
            onNeedKey();
            return; // resumed by setKey()
          }
          if (!res.ok) throw new Error(`${res.status}`);
          onState("live");
          delay = 500;
          await readEvents(res.body, dispatch);
        } catch (err) {
          console.warn("voxbus feed:", err);
        }
        onState("offline");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  return {
    get,
    follow,
    setKey(key) { sessionStorage.setItem(KEY, key); },
    needKey(fn) { onNeedKey = fn; },
  };
})();
