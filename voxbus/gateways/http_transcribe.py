"""`POST /v1/audio/transcriptions`, OpenAI's shape, through the bus.

The upload is decoded (any format `voxbus transcribe` reads) and published as a session of its
own, so the STT service cuts and transcribes it like any other and it stays stored and
replayable (`voxbus replay <session>`; the session id comes back in the `X-Voxbus-Session`
header). The reply waits for the session's `transcribed` event. With `stream=true` each
utterance's transcript goes out as a `transcript.text.delta` server-sent event as soon as it is
stored, then `transcript.text.done`. A `model` other than the STT service's own (or `whisper-1`,
OpenAI's name for "the default") is transcribed directly by that model through the manager,
one request, not stored as a session.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from voxbus.client import ModelClient
from voxbus.gateways.api_errors import ApiError, from_exception
from voxbus.ingest import decode_audio
from voxbus.messages.text import Segment, Transcript
from voxbus.transcribe_job import FileJob, session_id_for, to_srt, to_vtt, transcribe_jobs

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
DEFAULT_NAMES = ("", "whisper-1", "default")


async def transcriptions(request: Request) -> Response:
    gw = request.app.state.gateway
    form = await request.form(max_files=1, max_fields=32)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "a multipart `file` field with the audio is required", "missing_file", "file")
    data = await upload.read()
    if not data:
        raise ApiError(400, f"{upload.filename or 'the file'} is empty", "empty_file", "file")
    fmt_name = str(form.get("response_format") or "json")
    if fmt_name not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "invalid_value", "response_format")
    words = "word" in form.getlist("timestamp_granularities[]")
    stream = str(form.get("stream") or "false").lower() == "true"
    model = str(form.get("model") or "")
    name = Path(upload.filename or "upload").name
    pcm, fmt = await asyncio.to_thread(decode_audio, io.BytesIO(data), name)
    job = FileJob(Path(name), session_id_for(Path(name)), pcm, fmt, fmt.duration(len(pcm)))
    if model not in DEFAULT_NAMES and model != gw.stt_model:
        if gw.model_kind(model) != "stt":
            raise ApiError(404, f"no speech-to-text model {model!r} (GET /v1/models lists them)", "model_not_found",
                           "model")
        return await direct(gw, job, model, fmt_name, words, form.get("language"))
    await gw.require_service("stt", "transcriptions go through the STT service")
    headers = {"X-Voxbus-Session": job.session}
    if stream:
        return StreamingResponse(streamed(gw, job), media_type="text/event-stream", headers=headers)
    await asyncio.wait_for(transcribe_jobs(gw.bus, [job]), gw.transcribe_timeout)
    failed(job)
    return formatted(job, fmt_name, words, headers)


def failed(job: FileJob) -> None:
    if job.errors and not job.transcripts:
        e = job.errors[0]
        raise ApiError(502 if e.code.startswith("model") or e.code in ("unavailable", "timeout") else 400,
                       f"the audio could not be transcribed: {e.message}", e.code)


def formatted(job: FileJob, fmt_name: str, words: bool, headers: dict) -> Response:
    if fmt_name == "text":
        return PlainTextResponse(job.text + "\n", headers=headers)
    if fmt_name == "srt":
        return PlainTextResponse(to_srt(job), headers=headers)
    if fmt_name == "vtt":
        return PlainTextResponse(to_vtt(job), media_type="text/vtt", headers=headers)
    if fmt_name == "json":
        return JSONResponse({"text": job.text}, headers=headers)
    return JSONResponse(verbose(job.ordered(), job.duration, words), headers=headers)


def verbose(transcripts: list[Transcript], duration: float, words: bool) -> dict:
    segments = [{"id": i, "seek": 0, "start": g.start, "end": g.end, "text": g.text, "tokens": [], "temperature": 0.0,
                 "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
                for i, g in enumerate(g for t in transcripts
                                      for g in (t.segments or [Segment(start=t.start, end=t.end, text=t.text)]))]
    out = {"task": "transcribe", "language": next((t.language for t in transcripts if t.language), "en"),
           "duration": round(duration, 3), "text": " ".join(t.text for t in transcripts if t.text), "segments": segments}
    if words:
        out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for t in transcripts for w in t.words]
    return out


async def streamed(gw, job: FileJob):
    """Server-sent events: a delta per stored utterance, in order, then the whole text."""
    queue: asyncio.Queue = asyncio.Queue()
    run = asyncio.create_task(asyncio.wait_for(
        transcribe_jobs(gw.bus, [job], on_transcript=lambda _job, t: queue.put_nowait(t)), gw.transcribe_timeout))
    run.add_done_callback(lambda _t: queue.put_nowait(None))
    sent = -1
    try:
        while await queue.get() is not None:
            while sent + 1 in job.transcripts:  # (utterances in order, even if one came late)
                sent += 1
                text = job.transcripts[sent].text
                yield sse({"type": "transcript.text.delta", "delta": (" " if sent else "") + text})
        await run
        failed(job)
        yield sse({"type": "transcript.text.done", "text": job.text})
    except Exception as exc:  # (the status is sent already: the error goes as an event)
        err = from_exception(exc)
        yield sse({"type": "error", "error": {"message": err.message, "code": err.code}})
    finally:
        run.cancel()


def sse(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def direct(gw, job: FileJob, model: str, fmt_name: str, words: bool, language) -> Response:
    client: ModelClient = gw.models
    reply = await client.transcribe(job.pcm, job.format, model=model, language=str(language) if language else None,
                                    words=words or fmt_name == "verbose_json")
    t = Transcript(session="direct", utterance=0, text=reply.text, start=0.0, end=reply.duration,
                   segments=reply.segments, words=reply.words, language=reply.language, model=reply.model)
    job.transcripts[0] = t
    job.expected = 1
    return formatted(job, fmt_name, words, {})
