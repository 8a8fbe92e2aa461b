// A voxbus client written with nats.js, as someone in another language would write one: the
// credential file `voxbus creds new` wrote (an nkey seed) and the inbox prefix it printed.
// Usage: node voxbus_client.mjs URL SEED_FILE INBOX_PREFIX AUDIO_SUBJECT HEADERS_JSON FORBIDDEN_SUBJECT
// Prints one JSON line of what happened; exits non-zero if anything did not.
import { readFileSync } from "node:fs";
import { connect, headers, nkeyAuthenticator } from "nats";

const [url, seedFile, inboxPrefix, audioSubject, frameHeaders, forbidden] = process.argv.slice(2);
const seed = new TextEncoder().encode(readFileSync(seedFile, "utf8").trim());
const nc = await connect({ servers: url, authenticator: nkeyAuthenticator(seed), inboxPrefix,
                           reconnect: false, timeout: 5000 });
const result = {};

// A JetStream call: answered on the inbox prefix the role may subscribe to.
const jsm = await nc.jetstreamManager();
result.stream = (await jsm.streams.info("VOX_AUDIO")).config.name;

// The session's first audio frame, with the headers docs/protocol.md gives a frame.
const h = headers();
for (const [k, v] of Object.entries(JSON.parse(frameHeaders))) h.set(k, v);
const ack = await nc.jetstream().publish(audioSubject, new Uint8Array(640), { headers: h });
result.stored = { stream: ack.stream, seq: ack.seq };

// A subject the role may not publish to: the server says so on the connection's status.
const violation = (async () => {
  for await (const s of nc.status()) {
    if (s.type === "error") {
      const ctx = s.permissionContext || {};
      return `${s.data}: ${ctx.operation} ${ctx.subject}`;  // e.g. PERMISSIONS_VIOLATION: publish SUBJECT
    }
  }
})();
nc.publish(forbidden, new Uint8Array(0));
await nc.flush();
result.denied = await Promise.race([violation, new Promise((r) => setTimeout(() => r(null), 3000))]);
console.log(JSON.stringify(result));
await nc.close();
process.exit(result.denied ? 0 : 1);
