"""The assistant: each final transcript of a session becomes a chat turn.

Only sessions that ask are answered: their start event says `assistant: true` (or, when it says
nothing, `assistant.answer_by_default` decides; false as shipped), so a transcription-only client
never queues generations it did not want. The conversation id is the session id, so the
ModelManager keeps the session's KV state and each turn evaluates only its new tokens. Reply tokens stream to ``{p}.text.<sid>.reply`` as they come,
and whole sentences go to the TTS service on ``{p}.tts.<sid>.say`` as soon as each is complete.
An interrupt on the session stops the generation (the manager listens too) and the history keeps
only what was actually said.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.errors import ModelError, ProtocolError
from voxbus.messages import codec
from voxbus.messages.control import SessionStart
from voxbus.messages.model import GenerateChunk, GenerateDone
from voxbus.messages.text import PartialTranscript, ReplyChunk, SayRequest, Transcript
from voxbus.assistant.speculation import Speculation
from voxbus.sentences import SentenceSplitter
from voxbus.service_base import BusService
from voxbus.session_errors import report_session_error

log = logging.getLogger(__name__)

SILENT_SESSIONS = 10_000  # sessions remembered as not to be answered, least recent forgotten


@dataclass
class TurnTimes:
    transcript_at: float = 0.0
    first_token_at: float = 0.0
    done_at: float = 0.0


@dataclass
class _Conversation:
    messages: list[dict] = field(default_factory=list)
    turn: int = 0
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    worker: asyncio.Task | None = None
    last: float = field(default_factory=time.monotonic)  # when a transcript of it last arrived


class Assistant(BusService):
    service_kind = "assistant"

    def __init__(self, bus: Bus, models: ModelClient | None = None) -> None:
        super().__init__()
        self.bus = bus
        self.subjects = bus.subjects
        self.cfg = bus.config.assistant
        self.models = models or ModelClient.from_bus(bus)
        self.conversations: dict[str, _Conversation] = {}
        self.times: dict[tuple[str, int], TurnTimes] = {}  # for latency reports (voxbus demo)
        self.silent: OrderedDict[str, None] = OrderedDict()  # sessions that did not ask for answers
        self.speculations: dict[str, Speculation] = {}  # session -> its reply started early
        self.speculated = {"adopted": 0, "discarded": 0}
        self._pruner: asyncio.Task | None = None

    async def start(self) -> None:
        await self._keep_consumer(
            self.bus, stream=self.subjects.stream("text"), durable=self.subjects.consumer("assistant"),
            filter_subject=self.subjects.all_transcripts(), cb=self._on_transcript,
            ack_wait=float(self.cfg.consumer.ack_wait), max_ack_pending=self.cfg.consumer.max_ack_pending,
            start_new=True)
        if self.cfg.speculate:
            self._subs.append(await self.bus.nc.subscribe(self.subjects.all_partials(), cb=self._on_partial))
        self._pruner = self._supervised("assistant-prune", self._prune_idle)
        await self._announce(self.bus, "voxbus assistant: answers transcripts through the LLM")
        log.info("assistant answering %s", self.subjects.all_transcripts())

    async def stop(self) -> None:
        await self._unsubscribe()
        for spec in self.speculations.values():  # (replies nobody confirmed: the manager stops them)
            spec.cancel()
        self.speculations.clear()
        await self._end_tasks([self._pruner, *(c.worker for c in self.conversations.values())])

    async def _on_transcript(self, msg: Msg) -> None:
        try:
            t = codec.decode(msg.data, Transcript)
        except ProtocolError as exc:
            log.warning("ignoring a malformed transcript on %s: %s", msg.subject, exc)
            await msg.term()
            return
        if not t.text.strip():
            await msg.ack()
            return
        conv = self.conversations.get(t.session)
        if conv is None and (t.session in self.silent or not await self._wanted(t.session)):
            await msg.ack()
            return
        conv = conv or self._conversation(t.session)
        conv.last = time.monotonic()
        conv.queue.put_nowait((t, msg, conv.last))
        if conv.worker is None or conv.worker.done():
            conv.worker = asyncio.create_task(self._answer_all(t.session, conv), name=f"assistant-{t.session}")

    def _conversation(self, sid: str) -> _Conversation:
        conv = self.conversations[sid] = _Conversation(messages=[{"role": "system", "content": self.cfg.system_prompt}])
        return conv

    async def _on_partial(self, msg: Msg) -> None:
        """A closing partial (the speaker paused) of an idle conversation: start its reply early."""
        try:
            p = codec.decode(msg.data, PartialTranscript)
        except ProtocolError:
            return
        sid, conv = p.session, self.conversations.get(p.session)
        text = p.hypothesis or p.text  # (exactly what the final will say if the pause ends the turn)
        if not p.closing or not text.strip() or (conv is None and (sid in self.silent or not await self._wanted(sid))):
            return
        conv = conv or self.conversations.get(sid) or self._conversation(sid)
        old = self.speculations.get(sid)
        if (old is not None and old.matches(p.utterance, text)) or not self._idle(conv):
            return  # (a turn under way: the reply to this one must follow it, not race it)
        if old is not None:
            self.speculations.pop(sid, None)
            await self._drop(sid, old)
            if not self._idle(conv) or sid in self.speculations:
                return  # (a final came, or another closing partial, while the old one was dropped)
        turn = conv.turn
        generate = self.models.generate(
            messages=[*conv.messages, {"role": "user", "content": text}], conversation=sid, session=sid,
            model=self.cfg.model, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)
        self.speculations[sid] = Speculation(
            p.utterance, text, turn, generate, SentenceSplitter(first_words=self.cfg.first_words),
            lambda piece: self._say(sid, turn, piece + " ", final=False, now=True, held=True))

    @staticmethod
    def _idle(conv: _Conversation) -> bool:
        return conv.queue.empty() and (conv.worker is None or conv.worker.done())

    async def _drop(self, sid: str, spec: Speculation) -> None:
        spec.cancel()
        self.speculated["discarded"] += 1
        if spec.pieces_said:
            await self._say(sid, spec.turn, "", final=False, settle="discard")

    async def _prune_idle(self) -> None:
        """Forget conversations idle past `assistant.session_idle`: a long-running assistant keeps
        no state for sessions long gone."""
        idle = float(self.cfg.session_idle)
        while True:
            await asyncio.sleep(max(0.2, min(idle / 2, 30.0)))
            cutoff = time.monotonic() - idle
            for sid in [sid for sid, c in self.conversations.items()
                        if c.last < cutoff and c.queue.empty() and (c.worker is None or c.worker.done())]:
                del self.conversations[sid]
                if (spec := self.speculations.pop(sid, None)) is not None:
                    spec.cancel()
                for key in [k for k in self.times if k[0] == sid]:
                    del self.times[key]

    async def _wanted(self, sid: str) -> bool:
        """Whether the session asked to be answered (its start event), else the configured default."""
        asked = None
        try:
            raw = await self.bus.js.get_last_msg(self.subjects.stream("ctl"), self.subjects.control(sid, "start"),
                                                 direct=True)
            asked = codec.decode(raw.data, SessionStart).assistant
        except (NotFoundError, ProtocolError):
            pass
        wanted = self.cfg.answer_by_default if asked is None else asked
        if not wanted:
            self.silent[sid] = None
            self.silent.move_to_end(sid)
            while len(self.silent) > SILENT_SESSIONS:
                self.silent.popitem(last=False)
        return wanted

    async def _answer_all(self, sid: str, conv: _Conversation) -> None:
        while not conv.queue.empty():
            t, msg, arrived = conv.queue.get_nowait()
            try:
                await self.answer(sid, conv, t.text, arrived, t.utterance)
            except ModelError as exc:
                await self._error(sid, exc.code, f"no reply to {t.text[:40]!r}: {exc.message}")
            except Exception:
                log.exception("session %s: answering failed", sid)
            await msg.ack()

    async def answer(self, sid: str, conv: _Conversation, text: str, arrived: float, utterance: int | None = None) -> str:
        """One turn: stream the reply to the reply subject and, sentence by sentence, to TTS
        (adopting the reply started early to the same text, if there is one: speculation.py)."""
        turn = conv.turn
        conv.turn += 1
        times = self.times[sid, turn] = TurnTimes(transcript_at=arrived)
        conv.messages.append({"role": "user", "content": text})
        spec = self.speculations.pop(sid, None)
        skip = 0  # pieces the early reply already sent to the TTS
        if spec is not None and spec.turn == turn and spec.matches(utterance, text):
            self.speculated["adopted"] += 1
            skip = await spec.adopt()
            if skip:
                await self._say(sid, turn, "", final=False, settle="release")
            events = spec.events()
        else:
            if spec is not None:
                await self._drop(sid, spec)
                spec = None
            events = self.models.generate(messages=conv.messages, conversation=sid, session=sid, model=self.cfg.model,
                                          max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)
        said: list[str] = []
        try:
            final_text = await self._stream(sid, turn, events, said, skip, times)
        finally:
            if spec is not None:
                spec.cancel()  # (finished already when read to its end; stopped if the turn broke off)
        # What was actually said (an interrupted reply keeps only its spoken part).
        conv.messages.append({"role": "assistant", "content": final_text or "".join(said)})
        return final_text

    async def _stream(self, sid: str, turn: int, events, said: list[str], skip: int, times: TurnTimes) -> str:
        """The reply's tokens to the reply subject, its pieces to the TTS (`skip`: the first
        pieces, which the TTS already holds), the turn's end to both; returns the whole text."""
        splitter = SentenceSplitter(first_words=self.cfg.first_words)
        index = 0
        final_text = ""
        async for event in events:
            if isinstance(event, GenerateChunk):
                times.first_token_at = times.first_token_at or time.monotonic()
                await self._publish_reply(sid, turn, index, event.text, False)
                index += 1
                said.append(event.text)
                for sentence in splitter.feed(event.text):
                    if skip:
                        skip -= 1
                        continue
                    # The trailing space tells the TTS splitter the sentence is complete; the first
                    # piece may be a reply's first words only, to be spoken at once all the same.
                    await self._say(sid, turn, sentence + " ", final=False, now=splitter.emitted == 1)
            elif isinstance(event, GenerateDone):
                final_text = event.text
        times.done_at = time.monotonic()
        for sentence in splitter.flush():
            await self._say(sid, turn, sentence + " ", final=False)
        await self._say(sid, turn, "", final=True)
        await self._publish_reply(sid, turn, index, "", True)
        return final_text

    async def _publish_reply(self, sid: str, turn: int, index: int, text: str, final: bool) -> None:
        chunk = ReplyChunk(session=sid, turn=turn, index=index, text=text, final=final)
        await self.bus.nc.publish(self.subjects.reply(sid), codec.encode(chunk))

    async def _say(self, sid: str, turn: int, text: str, final: bool, now: bool = False, held: bool = False,
                   settle: str | None = None) -> None:
        req = SayRequest(text=text, turn=turn, voice=self.cfg.voice, final=final, speak_now=now, held=held,
                         settle=settle)
        await self.bus.store(self.subjects.say(sid), codec.encode(req))

    async def _error(self, sid: str, code: str, message: str) -> None:
        await report_session_error(self.bus, sid, code, message)
