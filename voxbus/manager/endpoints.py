"""What each ModelManager endpoint does with a request: decode, check, route, queue, reply.

Endpoints get their collaborators explicitly: the pool (models and their queues), the
cancellation registry (interrupts), the configuration, and the NATS connection (the server's
payload limit, the uploads bucket).
"""

from __future__ import annotations

import asyncio
import time
import unicodedata

import msgspec
import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from voxbus import uploads
from voxbus.audio import float_to_pcm, pcm_to_model_input
from voxbus.config.schema import Config
from voxbus.errors import BadRequest, Cancelled
from voxbus.manager import worker_protocol as wp
from voxbus.manager.batcher import TranscribeBatcher
from voxbus.manager.cancels import CANCELLED, INTERRUPTED, Cancellations
from voxbus.manager.pool import ModelPool
from voxbus.manager.requests import RequestContext
from voxbus.manager.slot import ModelSlot
from voxbus.messages import codec
from voxbus.messages.headers import HEADER_ROOM
from voxbus.messages.audio import AudioFormat
from voxbus.messages.model import (
    GenerateChunk, GenerateDone, GenerateRequest, GenerateTimings, ListModelsReply, ListModelsRequest,
    LoadModelRequest, ModelInfo, ModelReply, SynthesizeReply, SynthesizeRequest, TranscribeReply,
    TranscribeRequest, UnloadModelRequest, Usage,
)
from voxbus.messages.text import ModelRef, Segment, Timings, Word



def model_ref(slot: ModelSlot) -> ModelRef:
    return ModelRef(id=slot.id, version=slot.spec.version, fingerprint=slot.fingerprint, backend=slot.spec.backend)


def model_info(slot: ModelSlot, is_default: bool) -> ModelInfo:
    loaded = slot.loaded
    return ModelInfo(
        id=slot.id, kind=slot.spec.kind, backend=slot.spec.backend, version=slot.spec.version,
        fingerprint=slot.fingerprint, state=slot.state, pinned=slot.spec.pinned, priority=slot.spec.priority,
        quantization=slot.quantization or "as shipped", ram_bytes=slot.ram if loaded else 0,
        vram_bytes=slot.vram if loaded else 0, default_for=is_default,
        idle_s=round(slot.idle_seconds(), 1) if loaded else 0.0, metrics=slot.stats.snapshot(),
        instances=slot.instances, queue=len(slot.waiting), max_queue=slot.max_queue,
        crashes=slot.crashes.count(time.monotonic()), error=slot.error, workers=slot.worker_infos(),
    )


def check_text(text: str) -> None:
    """Text to speak: not blank, and no control characters (a NUL crashes phonemizers)."""
    if not text.strip():
        raise BadRequest("nothing to say: `text` is blank")
    for i, ch in enumerate(text):
        if ch not in "\t\n\r" and unicodedata.category(ch) == "Cc":
            raise BadRequest(f"`text` contains the control character U+{ord(ch):04X} at position {i}; "
                             f"send plain text")


def _body(msg: Msg, tp):
    """An empty body means 'all defaults' for admin requests."""
    return codec.decode(msg.data or b"{}", tp)


class Endpoints:
    def __init__(self, pool: ModelPool, cancels: Cancellations, config: Config, *, manager_id: str,
                 nc: Client, upload_bucket: str) -> None:
        self.pool = pool
        self.cancels = cancels
        self.config = config
        self.manager_id = manager_id
        self.nc = nc  # for the server's max_payload and the uploads bucket
        self.upload_bucket = upload_bucket
        self._batchers: dict[str, TranscribeBatcher] = {}

    def _batcher(self, slot: ModelSlot) -> TranscribeBatcher:
        if slot.id not in self._batchers:
            self._batchers[slot.id] = TranscribeBatcher(slot, self.pool, self.config.batching)
        return self._batchers[slot.id]

    # -- speech to text ------------------------------------------------------------------------
    async def transcribe(self, msg: Msg, ctx: RequestContext) -> None:
        t0 = time.perf_counter()
        req = codec.decode_meta(msg.headers, TranscribeRequest)
        slot = self.pool.route(req.model, "stt", req.version)
        pcm = msg.data
        if req.upload:
            pcm = await uploads.read(self.nc, self.upload_bucket, req.upload, int(self.config.manager.max_request_bytes))
        audio = await asyncio.to_thread(pcm_to_model_input, pcm, req.format, 16000)
        options = {"beam_size": req.beam_size, **({"words": True} if req.words else {})}  # (the batcher's key)
        async with self.pool.use(slot, ctx) as s:  # held while waiting in the batcher too: never evicted
            batcher = self._batcher(s)
            if batcher.accepts(audio):
                done = await batcher.submit(audio, req.language, options, ctx, interim=req.interim)
                result, queue_ms, infer_ms, batch_size = done.result, done.queue_ms, done.infer_ms, done.batch_size
            else:
                job = wp.Transcribe(job=0, audios=[audio.tobytes()], language=req.language, options=options)
                outcome = await self.pool.run(s, ctx, job)
                result, queue_ms, infer_ms, batch_size = (outcome.result.transcripts[0], outcome.queue_ms,
                                                          outcome.result.infer_ms, 1)
        # The model's metrics get this request's share of a batch: its real cost per utterance.
        s.stats.record(queue_ms, infer_ms / batch_size, audio_s=result.duration)
        out = TranscribeReply(
            model=model_ref(slot), text=" ".join(seg.text for seg in result.segments).strip(),
            segments=[Segment(start=round(g.start, 3), end=round(g.end, 3), text=g.text) for g in result.segments],
            words=[Word(word=w.word, start=round(max(w.start, 0.0), 3), end=round(max(w.end, w.start, 0.0), 3),
                        probability=round(min(max(w.probability, 0.0), 1.0), 3))
                   for g in result.segments for w in g.words if w.word],
            language=result.language, duration=round(result.duration, 3),
            timings=Timings(queue_ms=round(queue_ms, 2), inference_ms=round(infer_ms, 2),
                            total_ms=round((time.perf_counter() - t0) * 1000, 2)),
            batch_size=batch_size,
        )
        await ctx.send(codec.encode(out))

    # -- text generation -----------------------------------------------------------------------
    async def generate(self, msg: Msg, ctx: RequestContext) -> None:
        t0 = time.perf_counter()
        req = codec.decode(msg.data, GenerateRequest)
        if (req.prompt is None) == (req.messages is None):
            raise BadRequest("a generate request needs exactly one of `prompt` or `messages`")
        if req.messages is not None and not req.messages:
            raise BadRequest("`messages` is empty")
        slot = self.pool.route(req.model, "llm", req.version)
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        first: list[float] = []

        def on_text(text: str) -> None:  # called on the event loop as the worker streams
            if not first:
                first.append(time.perf_counter())
            pieces.put_nowait(text)

        async def forward() -> None:
            index = 0
            while (text := await pieces.get()) is not None:
                await ctx.send(codec.encode(GenerateChunk(index=index, text=text)))
                index += 1

        forwarder = asyncio.create_task(forward())
        messages = [{"role": m.role, "content": m.content} for m in req.messages] if req.messages else None
        job = wp.Generate(job=0, prompt=req.prompt, messages=messages, options=msgspec.structs.asdict(req.options),
                          conversation=req.conversation)
        keys = self.cancels.register(ctx, req.session, req.request_id)
        try:
            async with self.pool.use(slot, ctx) as s:
                outcome = await self.pool.run(s, ctx, job, conversation=req.conversation, on_text=on_text)
            result, queue_ms = outcome.result, outcome.queue_ms
        except Cancelled:
            if ctx.cancelled not in (INTERRUPTED, CANCELLED):
                raise
            # Interrupted before it started: the turn simply says nothing.
            result, queue_ms = wp.Result(job=0, infer_ms=0, finish_reason="cancelled"), 0.0
        finally:
            self.cancels.unregister(ctx, keys)
            pieces.put_nowait(None)
            await forwarder
        infer_ms = result.infer_ms
        slot.stats.record(queue_ms, infer_ms, tokens=result.completion_tokens)
        end = time.perf_counter()
        done = GenerateDone(
            model=model_ref(slot), text=result.text, finish_reason=result.finish_reason,
            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                        cached_tokens=result.cached_tokens),
            timings=GenerateTimings(
                queue_ms=round(queue_ms, 2), ttft_ms=round(((first[0] if first else end) - t0) * 1000, 2),
                total_ms=round((end - t0) * 1000, 2),
                tokens_per_s=round(result.completion_tokens / (infer_ms / 1000), 2) if infer_ms > 0 else 0.0,
            ),
        )
        await ctx.send(codec.encode(done))

    # -- text to speech ------------------------------------------------------------------------
    async def synthesize(self, msg: Msg, ctx: RequestContext) -> None:
        t0 = time.perf_counter()
        req = codec.decode(msg.data, SynthesizeRequest)
        check_text(req.text)
        slot = self.pool.route(req.model, "tts", req.version)
        async with self.pool.use(slot, ctx) as s:
            if req.voice and s.info and req.voice not in s.info.voices:
                raise BadRequest(f"{slot.id}: voice {req.voice!r} is not one of its speakers "
                                 f"({', '.join(s.info.voices) or 'it has one voice: leave `voice` out'})")
            job = wp.Synthesize(job=0, text=req.text, voice=req.voice, options={"speed": req.speed})
            outcome = await self.pool.run(s, ctx, job)
        result = outcome.result
        fmt = req.format or AudioFormat(rate=result.sample_rate, channels=1, sample="s16le")
        audio = np.frombuffer(result.audio or b"", dtype=np.float32)
        duration = len(audio) / result.sample_rate
        s.stats.record(outcome.queue_ms, result.infer_ms, audio_s=duration)
        pcm = await asyncio.to_thread(float_to_pcm, audio, result.sample_rate, fmt)
        meta = SynthesizeReply(model=model_ref(slot), format=fmt, duration=round(duration, 3), timings=Timings(
            queue_ms=round(outcome.queue_ms, 2), inference_ms=round(result.infer_ms, 2),
            total_ms=round((time.perf_counter() - t0) * 1000, 2)))
        # More than one message holds: whole frames per part, in order on the reply inbox.
        step = max(fmt.frame_bytes, (self.nc.max_payload - HEADER_ROOM) // fmt.frame_bytes * fmt.frame_bytes)
        meta.parts = max(1, -(-len(pcm) // step))
        for meta.part in range(meta.parts):
            await ctx.send(pcm[meta.part * step:(meta.part + 1) * step], codec.meta_headers(meta))

    # -- admin ---------------------------------------------------------------------------------
    def _info(self, slot: ModelSlot) -> ModelInfo:
        if slot.loaded:
            self.pool.loader.measure(slot)
        return model_info(slot, self.config.manager.defaults.get(slot.spec.kind) == slot.id)

    async def list_models(self, msg: Msg, ctx: RequestContext) -> None:
        req = _body(msg, ListModelsRequest)
        models = [self._info(s) for s in self.pool.slots.values() if req.kind in (None, s.spec.kind)]
        await ctx.send(codec.encode(ListModelsReply(manager=self.manager_id, models=models)))

    def _slot(self, model_id: str | None, version: str | None = None) -> ModelSlot:
        if not model_id:
            raise BadRequest("name the model: `model` is required")
        return self.pool.find(model_id, version)

    async def load(self, msg: Msg, ctx: RequestContext) -> None:
        req = _body(msg, LoadModelRequest)
        slot = self._slot(req.model, req.version)
        await self.pool.load(slot)
        await ctx.send(codec.encode(ModelReply(manager=self.manager_id, model=self._info(slot))))

    async def unload(self, msg: Msg, ctx: RequestContext) -> None:
        req = _body(msg, UnloadModelRequest)
        slot = self._slot(req.model)
        await self.pool.unload(slot)
        await ctx.send(codec.encode(ModelReply(manager=self.manager_id, model=self._info(slot))))
