"""The protocol document's audio, sessions, conventions and worked-example sections."""

from __future__ import annotations

import inspect

import voxbus.messages
from voxbus import subjects as sj
from voxbus.audio import FLOAT_PEAK_LIMIT
from voxbus.messages import audio, codec, model as mm, text
from voxbus.messages.headers import ACCEPTED, WORKING
from voxbus.messages.headers import ERROR as ERROR_HEADER
from voxbus.messages.headers import ERROR_CODE as ERROR_CODE_HEADER
from voxbus.protocol_doc.markdown import CFG, META, SID, STATUS, UNIONS, S, js, link, table
from voxbus.streams import DUPLICATE_WINDOW_S


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
- **Frames.** Each carries whole samples of its format, any length up to the server's `max_payload`; 20 to 40 ms is the sweet spot (`voxbus publish` sends {CFG.ingest.frame_ms} ms; `ingest.frame_ms` takes 10 to 100). `seq` counts a session's frames from 0, one by one. A `start` event is optional: it names the output voice and format for speech replies and whether the assistant answers (`assistant`). Frames need no `Nats-Msg-Id`, but a publisher that sends a frame again when its ack does not come (a broker restart) should set one: voxbus's publisher sets `<sid>:f<seq>` on frames and `<sid>:start` and `<sid>:end` on the two events, sends a frame whose ack fails or does not come within `ingest.ack_timeout` ({CFG.ingest.ack_timeout:g} s) again with every frame after it, for up to `ingest.retry_window` ({CFG.ingest.retry_window:g} s), and reports what it still could not store. Because of those ids, `voxbus publish` refuses a session id already started within the streams' duplicate window. Each frame's own format is what counts (a `start` event's `format` is a hint, and frames may change format mid-session). The STT service takes frames in `seq` order: a second copy of a `seq` it already has is dropped: silently when it is a redelivery, reported as `frames_duplicated` when it was stored as a new message (a client sending it twice without a `Nats-Msg-Id`); a frame that comes after a gap waits up to `stt.reorder_wait` ({CFG.stt.reorder_wait:g} s) for the missing ones (a resend stores them after later frames); frames still missing then are reported as `frames_missing` and replaced by silence of their length, so later times stay true. Start `seq` at 0: when the first frame the service reads of a session is not the session's first, it looks for the earlier ones in the stream; if the stream does not hold them, they wait `stt.reorder_wait` like frames after a gap (a resend may still bring them), and frames still missing then (the stream's limits dropped them before they were read, or they were never sent) are reported as `frames_missing` too. The `transcribed` event counts every frame reported missing (`frames_missing`), so a session whose transcripts cannot be complete is never reported as if they were.
- **End.** The `end` event carries the last frame's `seq`. A session whose frames stop for `stt.session_idle` ({CFG.stt.session_idle:g} s) without an `end` is finished as if it had ended. One whose `end` names frames that never come is finished without them after the same time, with a `frames_missing` error. Once every transcript of a finished session is stored, the STT service publishes `transcribed` (with the number of utterances), once: a session id is used once, and a frame past the end (`seq` beyond `last_seq`) or sent under the id of a session already transcribed is reported as `after_end`, not transcribed; so is a second `end` naming frames beyond the first. Whether a message came after the session was transcribed is judged by the server's storage times, not by the frames' `ts`, so clients' clocks do not matter.
- **Interim transcripts.** While an utterance is open, the STT service publishes PartialTranscripts on `{S.partial(SID)}`: the first once `stt.partial_first` ({CFG.stt.partial_first:g} s) of speech is heard, then one per `stt.partial_interval` ({CFG.stt.partial_interval:g} s) more (a `start` event may set `partial_interval`, or turn them off with `partials: false`). Each covers all of the utterance heard so far; `stable` is the prefix of `text` that two hypotheses in a row agreed on, and it only ever grows within an utterance; the final Transcript with the same `utterance` supersedes them, and no partial of an utterance comes after its final. They are not deduplicated or acknowledged: a lost one changes nothing. Under load they thin out (finals first), they never hold a final back. A partial marked `closing` is the early final: made of exactly the audio the final will have if the pause the speaker has just begun ends the turn (the assistant may start its reply on it).
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


