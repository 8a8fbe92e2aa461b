"""Render the voxbus wire protocol as Markdown, generated from the code that defines it.

    python -m voxbus.protocol_doc docs/protocol.md          # (re)write the document
    python -m voxbus.protocol_doc --check docs/protocol.md  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import typing
from pathlib import Path

import msgspec
import msgspec.inspect as mi

import voxbus.messages
from voxbus import errors, session_errors, subjects as sj
from voxbus.client.calls import NO_RESPONDERS
from voxbus.config.schema import Config
from voxbus.audio import FLOAT_PEAK_LIMIT
from voxbus.messages.headers import ACCEPTED, WORKING
from voxbus.messages.headers import DEADLINE as DEADLINE_HEADER
from voxbus.messages.headers import ERROR as ERROR_HEADER
from voxbus.messages.headers import ERROR_CODE as ERROR_CODE_HEADER
from voxbus.messages.headers import QUEUE as QUEUE_HEADER
from voxbus.messages.headers import REQUEST_ID as REQUEST_ID_HEADER
from voxbus.messages.headers import STATUS as STATUS_HEADER
from voxbus.messages import admin, audio, codec, control, model as mm, text
from voxbus.streams import DUPLICATE_WINDOW_S, stream_configs

MODULES = (audio, text, control, admin, mm)
SID = "demo"
S = sj.Subjects("vox")
CFG = Config()
META, STATUS = codec.META_HEADER, STATUS_HEADER
UNIONS = {n: typing.get_args(getattr(m, n)) for m in MODULES for n in dir(m)
          if n.endswith("Event") and typing.get_origin(getattr(m, n)) is typing.Union}
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


def scan() -> tuple[list[type], dict[tuple[type, str], str]]:
    """The public wire Structs in source order, and the attribute docstrings of every Struct (a string
    statement right after an annotated assignment in a class body documents that field)."""
    found, docs = [], {}
    for mod in MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(mod))):
            cls = getattr(mod, getattr(node, "name", ""), None)
            if not (isinstance(node, ast.ClassDef) and isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
                continue
            found += [] if node.name.startswith("_") else [cls]
            for a, b in zip(node.body, node.body[1:]):
                if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                        and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                    docs[cls, a.target.id] = inspect.cleandoc(b.value.value)
    return found, docs


def js(obj) -> str:
    return msgspec.json.encode(obj).decode()


def link(name: str) -> str:
    return f"[{name}](#{name.lower()})"


def links(phrase: str) -> str:
    names = {c.__name__ for c in scan()[0]}
    return re.sub(r"\b[A-Z]\w+\b", lambda m: link(m[0]) if m[0] in names else m[0], phrase)


def table(head: tuple[str, ...], rows) -> str:
    cell = lambda s: " ".join(str(s).split()).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def type_name(t) -> str:
    """A msgspec type as a JSON reader sees it: `int >= 0`, `string | null`, `array of Segment`."""
    if isinstance(t, mi.Metadata):
        return type_name(t.type)
    if isinstance(t, (mi.IntType, mi.FloatType, mi.StrType)):
        ops = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
               ("max_length", "length <="))
        bounds = ", ".join(f"{op} {getattr(t, a)}" for a, op in ops if getattr(t, a, None) is not None)
        return f"{ {mi.IntType: 'int', mi.FloatType: 'number', mi.StrType: 'string'}[type(t)]} {bounds}".strip()
    if isinstance(t, mi.UnionType):
        return " | ".join(type_name(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return " | ".join(js(v) for v in t.values)
    if isinstance(t, mi.StructType):
        return link(t.cls.__name__)
    if isinstance(t, (mi.ListType, mi.VarTupleType)):
        return f"array of {type_name(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"object of {type_name(t.key_type)} to {type_name(t.value_type)}"
    return {mi.NoneType: "null", mi.BoolType: "boolean", mi.AnyType: "any"}.get(type(t), type(t).__name__)


def default_of(f: mi.Field) -> str:
    if f.required:
        return "required"
    if f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
        return f"{type(value).__name__} defaults" if isinstance(value, msgspec.Struct) else f"`{js(value)}`"
    return f"`{js(f.default)}`"


def struct_section(cls: type, docs: dict) -> str:
    info = mi.type_info(cls)
    owner = {n: b for b in reversed(cls.__mro__) for n in b.__dict__.get("__annotations__", {})}
    order = list(owner)  # base classes' fields first, each in source order
    out = [f"### {cls.__name__}", ""] + ([inspect.cleandoc(cls.__doc__), ""] if cls.__doc__ else [])
    if info.tag_field:
        union = next(n for n, members in UNIONS.items() if cls in members)
        out += [f"Tagged: `\"{info.tag_field}\": {js(info.tag)}`, a member of `{union}`.", ""]
    rows = []
    for f in sorted(info.fields, key=lambda f: order.index(f.name)):
        meta = f.type.extra_json_schema.get("description", "") if isinstance(f.type, mi.Metadata) else ""
        doc = " ".join(d for d in (meta, docs.get((owner[f.name], f.name), "")) if d)
        rows.append((f"`{f.encode_name}`", type_name(f.type), default_of(f), doc))
    return "\n".join(out + [table(("Field", "JSON type", "Default", "Description"), rows)])


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
    rows = [(S.audio_in(SID), "client (audio source)", "raw PCM", "`Vox-Meta`: AudioFrame"),
            (S.audio_out(SID), "TTS service", "raw PCM", "`Vox-Meta`: SpeechChunk"),
            (S.transcript(SID), "STT service", "Transcript", f"`Nats-Msg-Id: {SID}:<utterance>`"),
            (S.reply(SID), "LLM service", "ReplyChunk", ""),
            (S.say(SID), "any client, or the LLM service", "SayRequest", "")]
    producers = {"start": "client (audio source)", "end": "client (audio source)", "interrupt": "client or any service",
                 "error": "the service that rejected the session's input", "transcribed": "STT service"}
    ids = {"error": f"`Nats-Msg-Id: {SID}:error:<seq>`", "transcribed": f"`Nats-Msg-Id: {SID}:transcribed`"}
    rows += [(S.control(SID, e), producers[e], tags[e], ids.get(e, "")) for e in sj.CONTROL_EVENTS]
    rows += [(S.admin(e), "ModelManager", tags[e], "") for e in sj.ADMIN_EVENTS]
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

### Streams

Defaults from the packaged configuration (`streams.*` in voxbus.yaml). Duplicate window: {DUPLICATE_WINDOW_S:g} s.

{streams}"""


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

**Message sizes.** Every message must fit the server's `max_payload` (1 MiB on a plain `nats-server`; the one voxbus embeds allows 8 MB; clients read it when they connect). Speech longer than one message comes back as several SynthesizeReply messages on the reply inbox, in order (`part` 0 .. `parts`-1, whole frames each): concatenate their payloads. Audio to transcribe that does not fit one message (a voxbus client first reduces it to 16 kHz mono s16, about 32 s per MiB) is put in the JetStream Object Store bucket `{S.upload_bucket()}` (objects expire after `streams.uploads.max_age`, {CFG.streams.uploads.max_age:g} s), and the request names it in `upload` with an empty payload; the manager deletes it once read. Anything else too large (a chat history over the limit, say) is refused by the client with `payload_too_large` before it is sent.

Each model has a bounded queue (`manager.max_queue`: {q.llm} for an LLM, {q.stt} for STT, {q.tts} for TTS by default, or `max_queue` in the model's entry). A request beyond it is refused at once with `overloaded`, whose `retry_after` says when to try again. Requests to one model are served in arrival order. Each model runs in worker processes of its own; a worker that dies or hangs mid-request fails the requests running on it with `model_crashed` (transient: the next request gets a fresh worker), and after `manager.quarantine_after` ({CFG.manager.quarantine_after}) crashes within `manager.quarantine_window` ({CFG.manager.quarantine_window:g} s) the model is quarantined: its requests get `model_failed` at once until an operator loads it again (`voxbus models load ID`). The `crashed` and `quarantined` events on the admin subject say why.

An error is one message with headers `{ERROR_CODE_HEADER}` (the numeric status below) and `{ERROR_HEADER}` (the message, on one line), and a JSON {link("ErrorReply")} body. A NATS no-responders status (`Status: {NO_RESPONDERS}`) means no manager is running. Treat unknown codes as generic errors.

How voxbus clients behave (defaults from `client.*`): no `{ACCEPTED}` within {c.accept_timeout:g} s means no manager took the request, so it is retried (up to {c.retries} times, backoff from {c.backoff:g} s); no message for {c.liveness_timeout:g} s after acceptance means the manager died, so the request is retried only if no part of the answer arrived; past the overall deadline ({c.deadline:g} s) while heartbeats continue, it fails with `timeout` and is not retried; an error reply is retried only when its `transient` is true, `model_crashed` at most once and only if no part of the answer arrived, and `overloaded` not at all (the caller decides, after `retry_after`).

{codes}

### Session errors

A problem with one session's input is published on its own `{S.control(SID, "error")}` (and kept in the CTL stream); other sessions never notice. The STT service reports at most 20 frame errors per session, the last saying so. Codes:

{table(("Code", "Meaning"), [(f"`{c}`" if not c.startswith("(") else c, m) for c, m in session_errors.CODES.items()])}

Each event has a `Nats-Msg-Id`, so a service that handles the same input again after a restart does not report it twice: `<sid>:error:<n>` for a frame, where `<n>` is the JetStream stream sequence of the offending message (the only number a frame whose header does not decode has), and `<sid>:error:utt<seq>` for an utterance, where `<seq>` is its first frame's `seq`."""


def audio_and_conventions() -> str:
    samples = table(("`sample`", "Type", "Bytes per sample"), [
        (f"`{name}`", f"{'signed integer' if name[0] == 's' else 'IEEE float'}, {name[1:-2]}-bit little-endian"
         + (", nominal range -1.0 to 1.0" if name[0] == "f" else ""), width) for name, width in audio.SAMPLE_WIDTH.items()])
    frame = audio.AudioFrame(format=audio.AudioFormat(), seq=0, ts=1700000000.25)
    bad = []
    for sid in ("a.b", "all>", "two words"):
        try:
            sj.validate_session_id(sid)
        except sj.InvalidSessionId as exc:
            bad.append(f"  - `{sid}`: {exc}")
    unions = "\n".join(f"  - `{n}`: " + ", ".join(f"`{m.__struct_config__.tag}` = {link(m.__name__)}" for m in ms)
                       for n, ms in sorted(UNIONS.items()))
    evolution = " ".join(inspect.cleandoc(voxbus.messages.__doc__ or "").splitlines()[2:])
    nl = "\n"
    return f"""## Audio

{audio.AudioFormat.__doc__} A payload's length is a multiple of `channels` times the sample width; its duration is `bytes / (width * channels * rate)`.

{samples}

Float samples (`f32le`) must be finite and within ±{FLOAT_PEAK_LIMIT:g}: samples a little over full scale are clipped to [-1, 1], and audio with NaN, infinity or a larger peak is refused with `invalid_audio` (on a session: an error event), because it is not audio scaled as floats.

An audio frame on `{S.audio_in(SID)}` carries its AudioFrame in a header, for example `{META}: {codec.meta_headers(frame)[META]}`, and raw PCM as the body (20 ms at these settings is {int(0.02 * frame.format.rate) * frame.format.frame_bytes} bytes). Each frame describes itself, so any single frame of a replay decodes on its own.

## Sessions

- **Streams first.** Every voxbus process creates (or updates) the streams and the uploads bucket when it connects (`voxbus server`, `manager`, `stt`, `up`...). Publish frames and control events with a JetStream publish and wait for its ack: before the streams exist, the server answers with a no-responders status (503), and a plain core publish would vanish without one.
- **Frames.** Each carries whole samples of its format, any length up to the server's `max_payload`; 20 to 40 ms is the sweet spot (`voxbus publish` sends {CFG.ingest.frame_ms} ms; `ingest.frame_ms` takes 10 to 100). `seq` counts a session's frames from 0, one by one. A `start` event is optional: it names the output voice and format for speech replies and whether the assistant answers (`assistant`). Frames need no `Nats-Msg-Id` (the stream would keep one id per frame for its duplicate window); voxbus's publisher sets `<sid>:start` and `<sid>:end` on the two events. Each frame's own format is what counts (a `start` event's `format` is a hint, and frames may change format mid-session). The STT service takes frames in `seq` order: a second copy of a `seq` it already has is dropped (a publisher's retry, a redelivery); frames missing between two it received are reported as `frames_missing` and replaced by silence of their length, so later times stay true. Frames before the first one it receives are not checked (a service resuming after a crash starts mid-session), so start `seq` at 0.
- **End.** The `end` event carries the last frame's `seq`. A session whose frames stop for `stt.session_idle` ({CFG.stt.session_idle:g} s) without an `end` is finished as if it had ended. Once every transcript of a finished session is stored, the STT service publishes `transcribed` (with the number of utterances), once: a session id is used once, and a frame past the end (`seq` beyond `last_seq`) or sent under the id of a session already transcribed is reported as `after_end`, not transcribed.
- **Replay.** A session's stored frames are complete when the frame whose `seq` equals the `end` event's `last_seq` has been read (a JetStream ordered consumer with no pending messages has read everything stored so far). `voxbus replay SESSION` prints the end and `transcribed` events in their place on the session clock.
- **Turns.** A SayRequest's `turn` is numbered by whoever sends it: the assistant counts its replies from 0; a client that only says things may keep 0.

## Conventions

- Session ids: 1 to {sj.MAX_SESSION_ID_LENGTH} characters matching `{sj._SESSION_ID_RE.pattern}`. The id is a subject token, so anything that would change routing is refused, for example:
{nl.join(bad)}
- Bodies and `{META}` values are UTF-8 JSON objects with the fields listed under Messages; optional fields may be omitted (they take their default) and `null` means "none".
- {evolution}
- Transcripts are published with `Nats-Msg-Id: <sid>:<utterance>` (for example `{SID}:3`), so JetStream stores a retried publish within {DUPLICATE_WINDOW_S:g} s only once.
- Session, control and admin subjects are captured by JetStream streams with limits retention: history stays replayable until it is older or larger than the stream's limits.
- Tagged unions are told apart by their `type` field:
{unions}"""


def examples() -> str:
    def ref(kind: str) -> text.ModelRef:
        mid = CFG.manager.defaults[kind]
        return text.ModelRef(id=mid, version=CFG.models[mid].version, fingerprint="0123456789abcdef",
                             backend=CFG.models[mid].backend)
    fmt = audio.AudioFormat()
    t_req = codec.meta_headers(mm.TranscribeRequest(format=fmt, language="en", session=SID))[META]
    t_rep = mm.TranscribeReply(model=ref("stt"), text="Hello there.", language="en", duration=1.5,
                               segments=[text.Segment(start=0.0, end=1.3, text="Hello there.")],
                               timings=text.Timings(queue_ms=0.4, inference_ms=180.0, total_ms=182.5))
    g_req = mm.GenerateRequest(messages=[mm.ChatMessage(role="user", content="Say hello.")], conversation=SID,
                               options=mm.SamplingOptions(max_tokens=32, temperature=0.0))
    g_seq = [mm.GenerateChunk(index=0, text="Hello"), mm.GenerateChunk(index=1, text="!"),
             mm.GenerateDone(model=ref("llm"), text="Hello!", finish_reason="stop",
                             usage=mm.Usage(prompt_tokens=12, completion_tokens=2),
                             timings=mm.GenerateTimings(queue_ms=0.3, ttft_ms=41.0, total_ms=55.2, tokens_per_s=140.0))]
    steps = [f"headers `{STATUS}: {ACCEPTED}`, empty body",
             f"headers `{STATUS}: {WORKING}`, empty body (repeated while the request runs)"]
    steps = "\n".join(f"{i}. {s}" for i, s in enumerate(steps + [f"`{js(m)}`" for m in g_seq], 1))
    err = mm.ErrorReply(code="unknown_model", message="no model 'gpt-9'; known: " + ", ".join(CFG.models))
    return f"""## Worked examples

### Transcribe request

Publish to `{S.model("stt", "transcribe")}` with a reply subject (an inbox such as `_INBOX.k3j2`) and:

- header `{META}: {t_req}`
- payload: the utterance as raw PCM in that format; 1.5 s of {fmt.rate} Hz mono s16le is {int(1.5 * fmt.rate) * fmt.frame_bytes} bytes.

The inbox receives `{STATUS}: {ACCEPTED}`, zero or more `{STATUS}: {WORKING}`, then one message whose JSON body is a TranscribeReply:

```json
{js(t_rep)}
```

### Generate exchange

Publish to `{S.model("llm", "generate")}` with a reply subject and this JSON body (no headers needed):

```json
{js(g_req)}
```

Messages on the reply inbox, in order:

{steps}

The chunk texts concatenated equal the done message's `text`. Had the model id been unknown, the inbox would instead get (after `{ACCEPTED}`) one message with headers `{ERROR_CODE_HEADER}: 404` and `{ERROR_HEADER}: <message>`, and this body:

```json
{js(err)}
```"""


def render() -> str:
    found, docs = scan()
    sections = "\n\n".join(struct_section(cls, docs) for cls in found)
    return f"""# voxbus wire protocol

Generated by `python -m voxbus.protocol_doc docs/protocol.md` from the code that defines the protocol; do not edit by hand.

{subjects_section()}

{protocol_section()}

{audio_and_conventions()}

{examples()}

## Messages

{sections}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m voxbus.protocol_doc", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if OUT differs from the generated text")
    ap.add_argument("out", nargs="?", metavar="OUT", help="file to write (default: standard output)")
    args = ap.parse_args(argv)
    doc = render()
    if args.check:
        path = Path(args.out or "docs/protocol.md")
        if not path.exists() or path.read_text() != doc:
            sys.stderr.write(f"{path} is out of date: run python -m voxbus.protocol_doc {path}" + "\n")
            return 1
        return 0
    if args.out:
        Path(args.out).write_text(doc)
    else:
        sys.stdout.write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
