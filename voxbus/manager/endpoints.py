"""What each ModelManager endpoint does with a request: decode, route, run, reply."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg

from voxbus.audio import float_to_pcm, pcm_to_model_input
from voxbus.errors import BadRequest, ModelFailed
from voxbus.manager.backends.base import BackendError
from voxbus.manager.batcher import TranscribeBatcher
from voxbus.manager.replies import ReplyChannel
from voxbus.manager.slot import ModelSlot
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat
from voxbus.messages.model import (
    GenerateChunk, GenerateDone, GenerateRequest, GenerateTimings, ListModelsReply, ListModelsRequest,
    LoadModelRequest, ModelInfo, ModelReply, SynthesizeReply, SynthesizeRequest, TranscribeReply,
    TranscribeRequest, UnloadModelRequest, Usage,
)
from voxbus.messages.text import ModelRef, Segment, Timings

if TYPE_CHECKING:
    from voxbus.manager.service import ModelManager


def model_ref(slot: ModelSlot) -> ModelRef:
    return ModelRef(id=slot.id, version=slot.spec.version, fingerprint=slot.fingerprint, backend=slot.spec.backend)


def model_info(slot: ModelSlot, is_default: bool) -> ModelInfo:
    return ModelInfo(
        id=slot.id, kind=slot.spec.kind, backend=slot.spec.backend, version=slot.spec.version,
        fingerprint=slot.fingerprint, state=slot.state, pinned=slot.spec.pinned, priority=slot.spec.priority,
        quantization=slot.quantization or "as shipped", ram_bytes=slot.ram if slot.loaded else 0,
        vram_bytes=slot.vram if slot.loaded else 0, default_for=is_default,
        idle_s=round(slot.idle_seconds(), 1) if slot.loaded else 0.0, metrics=slot.stats.snapshot(),
    )


def _body(msg: Msg, tp):
    """An empty body means 'all defaults' for admin requests."""
    return codec.decode(msg.data or b"{}", tp)


async def _run(slot: ModelSlot, fn, *args):
    """Run on the model's worker; a backend's own complaint about the input is the caller's error."""
    return await _answer(slot, slot.timed(fn, *args))


async def _answer(slot: ModelSlot, work):
    """Await model work, mapping its failures to wire errors and counting them."""
    try:
        return await work
    except BackendError as exc:
        slot.stats.record_error()
        raise BadRequest(f"{slot.id}: {exc}") from None
    except Exception as exc:
        slot.stats.record_error()
        raise ModelFailed(f"{slot.id} failed: {type(exc).__name__}: {exc}") from exc


class Endpoints:
    def __init__(self, manager: "ModelManager") -> None:
        self.m = manager
        self._batchers: dict[str, TranscribeBatcher] = {}

    @property
    def pool(self):
        return self.m.pool

    def _batcher(self, slot: ModelSlot) -> TranscribeBatcher:
        if slot.id not in self._batchers:
            self._batchers[slot.id] = TranscribeBatcher(slot, self.m.config.batching)
        return self._batchers[slot.id]

    # -- speech to text ------------------------------------------------------------------------
    async def transcribe(self, msg: Msg, reply: ReplyChannel) -> None:
        t0 = time.perf_counter()
        req = codec.decode_meta(msg.headers, TranscribeRequest)
        slot = self.pool.route(req.model, "stt", req.version)
        rate = 16000
        audio = await asyncio.to_thread(pcm_to_model_input, msg.data, req.format, rate)
        options = {"beam_size": req.beam_size}
        async with self.pool.use(slot) as s:  # held while waiting in the batcher too: never evicted
            batcher = self._batcher(s)
            if batcher.accepts(audio):
                done = await _answer(s, batcher.submit(audio, req.language, options))
                result, queue_ms, infer_ms, batch_size = done.result, done.queue_ms, done.infer_ms, done.batch_size
            else:
                result, queue_ms, infer_ms = await _run(s, s.backend.transcribe, audio, req.language, options)
                batch_size = 1
        # The model's metrics get this request's share of a batch: its real cost per utterance.
        s.stats.record(queue_ms, infer_ms / batch_size, audio_s=result.duration)
        out = TranscribeReply(
            model=model_ref(slot), text=" ".join(seg.text for seg in result.segments).strip(),
            segments=[Segment(start=round(g.start, 3), end=round(g.end, 3), text=g.text) for g in result.segments],
            language=result.language, duration=round(result.duration, 3),
            timings=Timings(queue_ms=round(queue_ms, 2), inference_ms=round(infer_ms, 2),
                            total_ms=round((time.perf_counter() - t0) * 1000, 2)),
            batch_size=batch_size,
        )
        await reply.send(codec.encode(out))

    # -- text generation -----------------------------------------------------------------------
    async def generate(self, msg: Msg, reply: ReplyChannel) -> None:
        t0 = time.perf_counter()
        req = codec.decode(msg.data, GenerateRequest)
        if (req.prompt is None) == (req.messages is None):
            raise BadRequest("a generate request needs exactly one of `prompt` or `messages`")
        if req.messages is not None and not req.messages:
            raise BadRequest("`messages` is empty")
        slot = self.pool.route(req.model, "llm", req.version)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()
        first: list[float] = []

        def on_text(text: str) -> None:  # called in the worker thread
            if not first:
                first.append(time.perf_counter())
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        async def forward() -> None:
            index = 0
            while (text := await pieces.get()) is not None:
                await reply.send(codec.encode(GenerateChunk(index=index, text=text)))
                index += 1

        forwarder = asyncio.create_task(forward())
        messages = [{"role": m.role, "content": m.content} for m in req.messages] if req.messages else None
        options = msgspec.structs.asdict(req.options)
        keys = self.m.cancels.register(stop, req.session, req.request_id)
        try:
            async with self.pool.use(slot) as s:
                result, queue_ms, infer_ms = await _run(
                    s, s.backend.generate, req.prompt, messages, options, on_text,
                    lambda: stop.is_set() or self.m._stopping, req.conversation)
        finally:
            self.m.cancels.unregister(stop, keys)
            pieces.put_nowait(None)
            await forwarder
        s.stats.record(queue_ms, infer_ms, tokens=result.completion_tokens)
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
        await reply.send(codec.encode(done))

    # -- text to speech ------------------------------------------------------------------------
    async def synthesize(self, msg: Msg, reply: ReplyChannel) -> None:
        t0 = time.perf_counter()
        req = codec.decode(msg.data, SynthesizeRequest)
        if not req.text.strip():
            raise BadRequest("nothing to say: `text` is blank")
        slot = self.pool.route(req.model, "tts", req.version)
        async with self.pool.use(slot) as s:
            result, queue_ms, infer_ms = await _run(s, s.backend.synthesize, req.text, req.voice, {"speed": req.speed})
        duration = len(result.audio) / result.sample_rate
        s.stats.record(queue_ms, infer_ms, audio_s=duration)
        fmt = req.format or AudioFormat(rate=result.sample_rate, channels=1, sample="s16le")
        pcm = await asyncio.to_thread(float_to_pcm, result.audio, result.sample_rate, fmt)
        meta = SynthesizeReply(model=model_ref(slot), format=fmt, duration=round(duration, 3), timings=Timings(
            queue_ms=round(queue_ms, 2), inference_ms=round(infer_ms, 2),
            total_ms=round((time.perf_counter() - t0) * 1000, 2)))
        await reply.send(pcm, codec.meta_headers(meta))

    # -- admin ---------------------------------------------------------------------------------
    def _info(self, slot: ModelSlot) -> ModelInfo:
        return model_info(slot, self.m.config.manager.defaults.get(slot.spec.kind) == slot.id)

    async def list_models(self, msg: Msg, reply: ReplyChannel) -> None:
        req = _body(msg, ListModelsRequest)
        models = [self._info(s) for s in self.pool.slots.values() if req.kind in (None, s.spec.kind)]
        await reply.send(codec.encode(ListModelsReply(manager=self.m.id, models=models)))

    def _slot(self, model_id: str | None, version: str | None = None) -> ModelSlot:
        if not model_id:
            raise BadRequest("name the model: `model` is required")
        return self.pool.find(model_id, version)

    async def load(self, msg: Msg, reply: ReplyChannel) -> None:
        req = _body(msg, LoadModelRequest)
        slot = self._slot(req.model, req.version)
        await self.pool.load(slot)
        await reply.send(codec.encode(ModelReply(manager=self.m.id, model=self._info(slot))))

    async def unload(self, msg: Msg, reply: ReplyChannel) -> None:
        req = _body(msg, UnloadModelRequest)
        slot = self._slot(req.model)
        await self.pool.unload(slot)
        await reply.send(codec.encode(ModelReply(manager=self.m.id, model=self._info(slot))))
