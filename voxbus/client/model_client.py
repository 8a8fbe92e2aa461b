"""The typed way for any voxbus component to ask the ModelManager for inference.

    async with open_bus(config) as bus:
        models = ModelClient.from_bus(bus)
        reply = await models.transcribe(pcm, AudioFormat(rate=16000))
        async for chunk in models.generate("Once upon a time"):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from typing import AsyncIterator

from nats.aio.client import Client

from voxbus.audio import compact_pcm
from voxbus.config.schema import ClientConfig
from voxbus.client.calls import Caller
from voxbus import uploads
from voxbus.errors import InvalidSubjectToken, ProtocolError
from voxbus.messages import codec
from voxbus.messages.headers import HEADER_ROOM, MANAGER
from voxbus.messages.audio import AudioFormat
from voxbus.messages.model import (
    ChatMessage, GenerateCancel, GenerateChunk, GenerateDone, GenerateEvent, GenerateRequest, ListModelsReply,
    ListModelsRequest, LoadModelRequest, ModelReply, SamplingOptions, SynthesizeReply,
    SynthesizeRequest, TranscribeReply, TranscribeRequest, UnloadModelRequest,
)
from voxbus.subjects import Subjects


MAX_HOMES = 10_000
"""Conversations whose manager a client remembers; a forgotten one is only served by any manager."""


class ModelClient:
    def __init__(self, nc: Client, subjects: Subjects, config: ClientConfig | None = None) -> None:
        self.subjects = subjects
        self.nc = nc
        self.caller = Caller(nc, config or ClientConfig())
        self.homes: OrderedDict[str, str] = OrderedDict()
        """Conversation id -> the manager that served its last turn (and so holds its KV state)."""

    @classmethod
    def from_bus(cls, bus) -> "ModelClient":
        return cls(bus.nc, bus.subjects, bus.config.client)

    async def transcribe(self, pcm: bytes, format: AudioFormat, *, model: str | None = None,
                         version: str | None = None, language: str | None = None, beam_size: int = 1,
                         words: bool = False, session: str | None = None, interim: bool = False,
                         deadline: float | None = None) -> TranscribeReply:
        """Transcribe one utterance. Audio too large for one message (the server's max_payload) is
        first reduced to what the model hears (16 kHz mono s16), and if that is still too large it
        travels through the uploads Object Store, kept there for every retry of this call and
        removed when it ends. `words`: the reply lists every word with its times. `interim`: a
        partial hypothesis, which the manager batches after every waiting final."""
        limit = self.nc.max_payload - HEADER_ROOM
        if len(pcm) > limit:
            pcm, format = await asyncio.to_thread(compact_pcm, pcm, format)
        async with contextlib.AsyncExitStack() as stack:
            name = None
            if len(pcm) > limit:
                name = await stack.enter_async_context(uploads.uploaded(self.nc, self.subjects.upload_bucket(), pcm))
                pcm = b""
            req = TranscribeRequest(model=model, version=version, format=format, language=language,
                                    beam_size=beam_size, words=words, session=session, interim=interim,
                                    upload=name)
            msg = await self.caller.request(self.subjects.model("stt", "transcribe"), pcm,
                                            codec.meta_headers(req), deadline)
        return codec.decode(msg.data, TranscribeReply)

    async def generate(self, prompt: str | None = None, *, messages: list[ChatMessage] | list[dict] | None = None,
                       conversation: str | None = None, session: str | None = None, model: str | None = None,
                       version: str | None = None, options: SamplingOptions | None = None,
                       deadline: float | None = None, **sampling) -> AsyncIterator[GenerateChunk | GenerateDone]:
        """Yield GenerateChunk as tokens arrive, then one GenerateDone. Stopping early (breaking out,
        closing or cancelling the iterator) tells the manager to stop generating."""
        if messages is not None:
            messages = [m if isinstance(m, ChatMessage) else ChatMessage(**m) for m in messages]
        if options is None:
            options = SamplingOptions(**sampling)
        req = GenerateRequest(model=model, version=version, prompt=prompt, messages=messages,
                              conversation=conversation, options=options, session=session,
                              request_id=uuid.uuid4().hex)
        finished = False
        anyone = self.subjects.model("llm", "generate")
        home = self.homes.get(conversation) if conversation else None
        try:
            async for msg in self.caller.stream(
                    self.subjects.model_at("llm", "generate", home) if home else anyone, codec.encode(req), None,
                    deadline, fallback=anyone if home else None,
                    on_accepted=(lambda m: self._at_home(conversation, m)) if conversation else None):
                event = codec.decode(msg.data, GenerateEvent)
                if isinstance(event, GenerateDone):
                    finished = True
                yield event
                if finished:
                    return
        finally:
            if not finished and not self.nc.is_closed:
                await self.nc.publish(self.subjects.model("llm", "cancel"),
                                      codec.encode(GenerateCancel(request_id=req.request_id)))
        raise ProtocolError("generate stream ended without a done message")

    def _at_home(self, conversation: str, accepted) -> None:
        """Remember which manager took the conversation's turn: the next one goes there."""
        manager = (accepted.headers or {}).get(MANAGER)
        if not manager:
            return  # (a manager too old to say who it is)
        try:
            self.subjects.model_at("llm", "generate", manager)
        except InvalidSubjectToken:
            return  # (an id no subject can hold)
        self.homes[conversation] = manager
        self.homes.move_to_end(conversation)
        while len(self.homes) > MAX_HOMES:
            self.homes.popitem(last=False)

    async def complete(self, prompt: str | None = None, **kwargs) -> GenerateDone:
        """generate() gathered: the final message (its text is the whole completion)."""
        async for event in self.generate(prompt, **kwargs):
            if isinstance(event, GenerateDone):
                return event
        raise ProtocolError("generate stream ended without a done message")

    async def synthesize(self, text: str, *, model: str | None = None, version: str | None = None,
                         voice: str | None = None, format: AudioFormat | None = None, speed: float = 1.0,
                         deadline: float | None = None) -> tuple[bytes, SynthesizeReply]:
        """(PCM bytes, metadata with their format); speech longer than one message is reassembled."""
        req = SynthesizeRequest(model=model, version=version, text=text, voice=voice, format=format, speed=speed)
        parts: list[bytes] = []
        meta = None
        async for msg in self.caller.stream(self.subjects.model("tts", "synthesize"), codec.encode(req), None, deadline):
            meta = codec.decode_meta(msg.headers, SynthesizeReply)
            if meta.part != len(parts):
                raise ProtocolError(f"synthesize reply part {meta.part} arrived after {len(parts)} parts")
            parts.append(msg.data)
            if len(parts) == meta.parts:
                break
        if meta is None or len(parts) != meta.parts:
            raise ProtocolError("the synthesize reply ended before its last part")
        meta.part = 0
        return b"".join(parts), meta

    async def list_models(self, kind: str | None = None, deadline: float | None = 10.0, *,
                          manager: str | None = None) -> ListModelsReply:
        """The models and their metrics, from any manager, or from the one with id `manager`."""
        subject = self.subjects.model_at("admin", "list", manager) if manager else self.subjects.model("admin", "list")
        msg = await self.caller.request(subject,
                                        codec.encode(ListModelsRequest(kind=kind)), None, deadline)
        return codec.decode(msg.data, ListModelsReply)

    async def load(self, model: str, version: str | None = None, deadline: float | None = None) -> ModelReply:
        msg = await self.caller.request(self.subjects.model("admin", "load"),
                                        codec.encode(LoadModelRequest(model=model, version=version)), None, deadline)
        return codec.decode(msg.data, ModelReply)

    async def unload(self, model: str, deadline: float | None = 60.0) -> ModelReply:
        msg = await self.caller.request(self.subjects.model("admin", "unload"),
                                        codec.encode(UnloadModelRequest(model=model)), None, deadline)
        return codec.decode(msg.data, ModelReply)


