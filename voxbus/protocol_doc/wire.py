"""The protocol document's subjects, streams and request-reply sections."""

from __future__ import annotations

import re

from voxbus import errors, session_errors, subjects as sj
from voxbus.client.calls import NO_RESPONDERS
from voxbus.messages.headers import ACCEPTED, WORKING
from voxbus.messages.headers import DEADLINE as DEADLINE_HEADER
from voxbus.messages.headers import ERROR as ERROR_HEADER
from voxbus.messages.headers import ERROR_CODE as ERROR_CODE_HEADER
from voxbus.messages.headers import MANAGER as MANAGER_HEADER
from voxbus.messages.headers import QUEUE as QUEUE_HEADER
from voxbus.messages.headers import REQUEST_ID as REQUEST_ID_HEADER
from voxbus.protocol_doc.markdown import CFG, META, SID, STATUS, UNIONS, S, link, links, table
from voxbus.streams import DUPLICATE_WINDOW_S, stream_configs

# Payload and reply of each model endpoint; a verb missing here fails generation on purpose.
ENDPOINTS = {
    ("stt", "transcribe"): ("raw PCM; `Vox-Meta`: TranscribeRequest", "TranscribeReply"),
    ("llm", "generate"): ("GenerateRequest", "GenerateChunk (0 or more), then GenerateDone"),
    ("llm", "cancel"): ("GenerateCancel (plain publish: every manager listens, none replies)", "none"),
    ("tts", "synthesize"): ("SynthesizeRequest", "raw PCM; `Vox-Meta`: SynthesizeReply"),
    ("admin", "list"): ("ListModelsRequest (an empty body means all defaults)", "ListModelsReply"),
    ("admin", "load"): ("LoadModelRequest", "ModelReply"),
    ("admin", "unload"): ("UnloadModelRequest", "ModelReply"),
}


def stream_of(subject: str) -> str:
    s = subject.split(".")
    for family in sj.STREAM_FAMILIES:
        for p in (pattern.split(".") for pattern in S.stream_subjects(family)):
            if (p[-1] == ">" and s[:len(p) - 1] == p[:-1]) or (len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s))):
                return f"`{S.stream(family)}`"
    raise ValueError(f"no stream captures {subject}")


def size(n: float, units: tuple[tuple[str, int], ...]) -> str:
    return next(f"{n / scale:g} {unit}" for unit, scale in units if n >= scale or scale == units[-1][1])


def subjects_section() -> str:
    tags = {m.__struct_config__.tag: m.__name__ for members in UNIONS.values() for m in members}
    rows = [(S.audio_in(SID), "client (audio source)", "raw PCM", f"`Vox-Meta`: AudioFrame; `Nats-Msg-Id: {SID}:f<seq>` from voxbus's publisher"),
            (S.audio_out(SID), "TTS service", "raw PCM", "`Vox-Meta`: SpeechChunk"),
            (S.transcript(SID), "STT service", "Transcript", f"`Nats-Msg-Id: {SID}:<utterance>`"),
            (S.partial(SID), "STT service", "PartialTranscript", ""),
            (S.reply(SID), "LLM service", "ReplyChunk", ""),
            (S.say(SID), "any client, or the LLM service", "SayRequest", "")]
    producers = {"start": "client (audio source)", "end": "client (audio source)", "interrupt": "client or any service",
                 "error": "the service that rejected the session's input", "transcribed": "STT service"}
    ids = {"error": f"`Nats-Msg-Id: {SID}:error:<n>` (STT; see Session errors)", "transcribed": f"`Nats-Msg-Id: {SID}:transcribed`"}
    rows += [(S.control(SID, e), producers[e], tags[e], ids.get(e, "")) for e in sj.CONTROL_EVENTS]
    rows += [(S.admin(e), "STT service" if e == "retention" else "ModelManager", tags[e], "") for e in sj.ADMIN_EVENTS]
    main = table(("Subject", "Producer", "Stream", "Payload", "Headers"),
                 [(f"`{s}`", who, stream_of(s), links(body), links(h)) for s, who, body, h in rows])
    models = table(("Subject", "Request", "Reply (on the request's reply inbox)"),
                   [(f"`{S.model(k, v)}`", links(ENDPOINTS[k, v][0]), links(ENDPOINTS[k, v][1]))
                    for k, verbs in sj.MODEL_VERBS.items() for v in verbs])
    streams = table(("Stream", "Subjects", "Retention", "Storage", "Max age", "Max bytes", "Discard"), [
        (f"`{c.name}`", ", ".join(f"`{s}`" for s in c.subjects), c.retention.value, c.storage.value,
         size(c.max_age, (("d", 86400), ("h", 3600), ("s", 1))), size(c.max_bytes, (("GiB", 2**30), ("MiB", 2**20))),
         c.discard.value) for c in stream_configs(S, CFG.streams)])
    wild = ", ".join(f"`{w}`" for w in (S.all_audio_in(), S.all_transcripts(), S.all_control(), S.all_admin()))
    return f"""## Subjects

Examples use the default prefix `{S.prefix}` and the session id `{SID}`. A deployment may set another prefix (`nats.prefix`); stream names follow it in upper case.

{main}

Consumers subscribe with wildcards such as {wild}. Durable consumer names are `<prefix>-<service>` (for example `{S.consumer("stt")}`), shared by a service's replicas.

### Model endpoints

The ModelManager is a NATS micro service named `{S.service_name()}` (discoverable through `$SRV.PING`) in queue group `{S.queue_group("manager")}`, so one of several managers answers each request. These subjects are plain request-reply and are not stored in any stream.

{models}

**Conversation affinity.** Each manager also answers generate requests on a subject of its own, `{S.model("llm", "generate")}.<manager id>`, and names itself in the `{MANAGER_HEADER}` header of its `{ACCEPTED}` status. A client that sends a `conversation` sends the next turn to the manager that took the last one, where the conversation's KV state is, and falls back to `{S.model("llm", "generate")}` (any manager) when that one does not answer: the conversation is then recomputed there from the messages, with the same greedy tokens.

### Service status

Every STT, TTS and assistant process is a NATS micro service too: `{S.service_name("stt")}`, `{S.service_name("tts")}` and `{S.service_name("assistant")}`, found through `$SRV.PING`. Each has one endpoint, `status`, on `{S.status("stt")}` (and `.tts`, `.assistant`; queue group `{S.queue_group("stt")}` and so on), that answers a [ServiceStatus](#servicestatus) for an empty request. `$SRV.STATS.{S.service_name("stt")}` asks every instance at once: each answer carries its ServiceStatus as the endpoint's `data`, so `healthy: false` (a loop that keeps dying) shows which process to look at.

### Streams

Defaults from the packaged configuration (`streams.*` in voxbus.yaml). Duplicate window: {DUPLICATE_WINDOW_S:g} s.

{streams}

Two buckets sit beside them: the Object Store `{S.upload_bucket()}` (audio too large for one message, below) and the Key-Value bucket `{S.state_bucket()}`, where the STT service records how far each of its durable consumers had got (key: the consumer's name, value: the first stream sequence not yet acknowledged), so a consumer someone deletes is created again there."""


def protocol_section() -> str:
    c = CFG.client
    tree = {m[1]: m[2] for m in re.finditer(r"[─└├]\s+(\w+)\s+(?:\d{3}\s+)?(.+)", errors.__doc__ or "")}
    codes = table(("Code", "Status", "Transient", "Meaning"), [
        (f"`{code}`", cls.status, "yes" if cls.transient else "no",
         (cls.__dict__.get("__doc__") or tree.get(cls.__name__, "")).strip())
        for code, cls in errors.ERROR_CLASSES.items()])
    q = CFG.manager.max_queue
    return f"""## Request-reply protocol

A client publishes a request to a model endpoint with a reply subject (its inbox) and listens there. Two request headers are optional and recommended:

- `{REQUEST_ID_HEADER}`: an id that stays the same on every retry of one call. A manager that still holds an earlier attempt (queued or running) attaches the retry to it instead of running the work twice: the retry's inbox gets everything already answered (a generation's first chunks), then the rest.
- `{DEADLINE_HEADER}`: how many seconds the caller will still wait (relative, because clocks differ). Work not started by then is dropped, and a running generation is stopped.

The manager answers on the inbox:

1. at once, an empty message with header `{STATUS}: {ACCEPTED}`;
2. every {c.heartbeat:g} s while the request waits or runs (a cold model load can take minutes), an empty message with header `{STATUS}: {WORKING}` and `{QUEUE_HEADER}: <n>`, the number of requests ahead of it in its model's queue (`0` once it runs);
3. the answer: one reply message, or for generate a stream of `chunk` messages ending in one `done`.

Messages with a `{STATUS}` header are never part of the answer. They are published with a reply subject of the manager's: when the caller's inbox has no subscriber any more, the server's no-responders status tells the manager that nobody waits, and unless a retry joins within half a second the request is dropped before it runs (or stopped, for a generation). Binary payloads (transcribe requests, synthesize replies) carry raw PCM as the body and their Struct, JSON-encoded, in the `{META}` header. Requests over `manager.max_request_bytes` ({CFG.manager.max_request_bytes} by default) are refused with `payload_too_large`; a request that does not decode is refused with `bad_request`.

**Message sizes.** Every message must fit the server's `max_payload` (1 MiB on a plain `nats-server`; the one voxbus embeds allows 8 MB; clients read it when they connect). Speech longer than one message comes back as several SynthesizeReply messages on the reply inbox, in order (`part` 0 .. `parts`-1, whole frames each): concatenate their payloads. Audio to transcribe that does not fit one message (a voxbus client first reduces it to 16 kHz mono s16, about 32 s per MiB) is put in the JetStream Object Store bucket `{S.upload_bucket()}` (objects expire after `streams.uploads.max_age`, {CFG.streams.uploads.max_age:g} s), and the request names it in `upload` with an empty payload. The sender keeps the object for every retry of the call and deletes it when the call ends; managers only read it. Anything else too large (a chat history over the limit, say) is refused by the client with `payload_too_large` before it is sent.

Each model has a bounded queue (`manager.max_queue`: {q.llm} for an LLM, {q.stt} for STT, {q.tts} for TTS by default, or `max_queue` in the model's entry). A request beyond it is refused at once with `overloaded`, whose `retry_after` says when to try again. Requests to one model are served in arrival order. Each model runs in worker processes of its own; a worker that dies or hangs mid-request fails the requests running on it with `model_crashed` (transient: the next request gets a fresh worker), and after `manager.quarantine_after` ({CFG.manager.quarantine_after}) crashes within `manager.quarantine_window` ({CFG.manager.quarantine_window:g} s) the model is quarantined: its requests get `model_failed` at once until an operator loads it again (`voxbus models load ID`). The `crashed` and `quarantined` events on the admin subject say why.

An error is one message with headers `{ERROR_CODE_HEADER}` (the numeric status below) and `{ERROR_HEADER}` (the message, on one line), and a JSON {link("ErrorReply")} body. A NATS no-responders status (`Status: {NO_RESPONDERS}`) means no manager is running. Treat unknown codes as generic errors.

How voxbus clients behave (defaults from `client.*`): no `{ACCEPTED}` within {c.accept_timeout:g} s means no manager took the request, so it is retried (up to {c.retries} times, backoff from {c.backoff:g} s); no message for {c.liveness_timeout:g} s after acceptance means the manager died, so the request is retried only if no part of the answer arrived; past the overall deadline ({c.deadline:g} s) while heartbeats continue, it fails with `timeout` and is not retried; an error reply is retried only when its `transient` is true, `model_crashed` at most once and only if no part of the answer arrived, and `overloaded` not at all (the caller decides, after `retry_after`).

{codes}

### Session errors

A problem with one session's input is published on its own `{S.control(SID, "error")}` (and kept in the CTL stream); other sessions never notice. The STT service reports at most 20 frame errors per session, the last saying so. Codes:

{table(("Code", "Meaning"), [(f"`{c}`" if not c.startswith("(") else c, m) for c, m in session_errors.CODES.items()])}

The STT service's events carry a `Nats-Msg-Id`, so when it handles the same input again after a restart it does not report it twice: `<sid>:error:<n>` for a frame or an end event, where `<n>` is the JetStream stream sequence of the offending message (the only number a frame whose header does not decode has); `<sid>:gap:<seq>` for frames missing from `<seq>` on; and `<sid>:error:utt<seq>` for an utterance, where `<seq>` is its first frame's `seq`. Errors from the TTS service and the assistant carry none: they report what happens live, once."""


