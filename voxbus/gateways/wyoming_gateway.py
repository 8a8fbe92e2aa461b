"""`voxbus wyoming`: a Wyoming server (the `wyoming` package), so Home Assistant's Wyoming
integration can use voxbus as its speech-to-text and text-to-speech engine.

- `describe` -> `info`: voxbus's STT and TTS models as Wyoming ASR and TTS programs.
- `transcribe`, `audio-start`, `audio-chunk`..., `audio-stop` -> the audio is published as a
  session of its own as it arrives (stored and replayable like any other); the STT service cuts
  and transcribes it, and the final text comes back as `transcript`. Streaming clients also get
  `transcript-start`, a `transcript-chunk` per utterance as it is transcribed, and
  `transcript-stop` before it.
- `synthesize` -> `audio-start`, `audio-chunk`s, `audio-stop`, synthesized by the manager.
Errors go back as Wyoming `error` events; the connection, and the server, go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.tts import Synthesize

from voxbus import __version__
from voxbus.bus import Bus
from voxbus.client import ModelClient
from voxbus.errors import ConfigError, VoxbusError
from voxbus.gateways import discovery
from voxbus.ingest import SessionPublisher
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat
from voxbus.messages.control import SessionTranscribed
from voxbus.messages.status import ServiceStatus
from voxbus.subjects import Subjects
from voxbus.messages.text import Transcript as VoxTranscript

log = logging.getLogger(__name__)

ATTRIBUTION = Attribution(name="voxbus", url="https://github.com/voxbus/voxbus")
SAMPLES_PER_CHUNK = 1024
SAMPLE = {1: "u8", 2: "s16le", 4: "s32le"}


def languages(model_id: str) -> list[str]:
    return ["en"] if model_id.endswith(("-en", ".en")) else ["en", "de", "fr", "es", "it", "nl", "pt"]


def describe(bus: Bus) -> Info:
    cfg = bus.config
    stt = [m for m, spec in cfg.models.items() if spec.kind == "stt"]
    tts = [m for m, spec in cfg.models.items() if spec.kind == "tts"]
    asr_models = [AsrModel(name=m, attribution=ATTRIBUTION, installed=True, description=f"voxbus {m}",
                           version=cfg.models[m].version or None, languages=languages(m)) for m in stt]
    voices = [TtsVoice(name=m, attribution=ATTRIBUTION, installed=True, description=f"voxbus {m}",
                       version=cfg.models[m].version or None, languages=["en"]) for m in tts]
    return Info(asr=[AsrProgram(name=cfg.wyoming.name, attribution=ATTRIBUTION, installed=True,
                                description="voxbus speech-to-text (through its STT service)", version=__version__,
                                models=asr_models, supports_transcript_streaming=True)],
                tts=[TtsProgram(name=cfg.wyoming.name, attribution=ATTRIBUTION, installed=True,
                                description="voxbus text-to-speech", version=__version__, voices=voices)])


class WyomingHandler(AsyncEventHandler):
    """One client connection."""

    def __init__(self, reader, writer, bus: Bus, timeout: float = 600.0, counters: dict | None = None) -> None:
        super().__init__(reader, writer)
        self.counters = counters if counters is not None else {"open": 0}
        self.counters["open"] += 1
        self.bus = bus
        self.models = ModelClient.from_bus(bus)
        self.timeout = timeout
        self.publisher: SessionPublisher | None = None
        self.format: AudioFormat | None = None
        self.subs: list = []
        self.texts: dict[int, str] = {}
        self.done = asyncio.Event()

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(describe(self.bus).event())
            elif Transcribe.is_type(event.type):
                pass  # (the model is the STT service's; a language hint needs no action for it)
            elif AudioStart.is_type(event.type):
                await self._start(AudioStart.from_event(event))
            elif AudioChunk.is_type(event.type):
                await self._chunk(AudioChunk.from_event(event))
            elif AudioStop.is_type(event.type):
                await self._stop()
            elif Synthesize.is_type(event.type):
                await self._synthesize(Synthesize.from_event(event))
        except (VoxbusError, asyncio.TimeoutError) as exc:
            log.warning("wyoming %s failed: %s", event.type, exc)
            await self.write_event(Error(text=str(exc) or "timed out", code=getattr(exc, "code", "error")).event())
            await self._end_session("error")
        return True

    async def _start(self, start: AudioStart) -> None:
        await self._end_session("restarted")  # (a second audio-start: the first session ends cleanly)
        try:
            await self.bus.nc.request(Subjects.micro("PING", self.bus.subjects.service_name("stt")), b"", timeout=2.0)
        except NoRespondersError:
            raise VoxbusError("no STT service runs on this bus: start `voxbus stt` or `voxbus up`") from None
        except NatsTimeout:
            pass  # (registered but busy: the audio waits its turn in the stream)
        if start.width not in SAMPLE or start.width == 1:
            raise VoxbusError(f"audio of {start.width}-byte samples: send 16- or 32-bit PCM")
        sid = f"wyoming-{uuid.uuid4().hex[:12]}"
        self.format = AudioFormat(rate=start.rate, channels=start.channels, sample=SAMPLE[start.width])
        self.texts, self.done = {}, asyncio.Event()
        s = self.bus.subjects
        self.subs = [await self.bus.nc.subscribe(s.transcript(sid), cb=self._on_transcript),
                     await self.bus.nc.subscribe(s.control(sid, "transcribed"), cb=self._on_done)]
        self.publisher = SessionPublisher(self.bus, sid, meta={"source": "wyoming"})
        await self.publisher.start(self.format)
        await self.write_event(TranscriptStart().event())

    async def _chunk(self, chunk: AudioChunk) -> None:
        if self.publisher is None:
            raise VoxbusError("audio-chunk before audio-start")
        await self.publisher.send(chunk.audio, self.format)

    async def _stop(self) -> None:
        if self.publisher is None:
            raise VoxbusError("audio-stop before audio-start")
        pub, self.publisher = self.publisher, None
        await pub.end()
        await asyncio.wait_for(self.done.wait(), self.timeout)
        await self.write_event(TranscriptStop().event())
        await self.write_event(Transcript(text=" ".join(t for _, t in sorted(self.texts.items()) if t)).event())
        await self._close_session()

    async def _on_transcript(self, msg) -> None:
        t = codec.decode(msg.data, VoxTranscript)
        if t.utterance not in self.texts:
            self.texts[t.utterance] = t.text
            await self.write_event(TranscriptChunk(text=(" " if t.utterance else "") + t.text).event())

    async def _on_done(self, msg) -> None:
        expected = codec.decode(msg.data, SessionTranscribed).utterances
        for _ in range(100):  # (the last transcript and this event travel on different streams)
            if len(self.texts) >= expected:
                break
            await asyncio.sleep(0.02)
        self.done.set()

    async def _synthesize(self, req: Synthesize) -> None:
        voice = req.voice.name if req.voice is not None and req.voice.name else None
        if voice and self.bus.config.models.get(voice) is None:
            voice = None  # (a voice Home Assistant remembers from another engine: the default one)
        speaker = req.voice.speaker if req.voice is not None else None
        pcm, meta = await self.models.synthesize(req.text, model=voice, voice=speaker)
        fmt = meta.format
        width = 2
        await self.write_event(AudioStart(rate=fmt.rate, width=width, channels=fmt.channels).event())
        step = SAMPLES_PER_CHUNK * width * fmt.channels
        for i in range(0, len(pcm), step):
            await self.write_event(AudioChunk(rate=fmt.rate, width=width, channels=fmt.channels,
                                              audio=pcm[i:i + step]).event())
        await self.write_event(AudioStop().event())

    async def _close_session(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()
        self.subs = []

    async def _end_session(self, reason: str) -> None:
        """A session still open here (an error, a new audio-start, the client gone): its end event,
        so the STT finishes it now rather than after stt.session_idle."""
        if self.publisher is not None:
            pub, self.publisher = self.publisher, None
            try:
                await pub.end(reason=reason)
            except Exception:
                log.exception("ending a wyoming session (%s) failed", reason)
        await self._close_session()

    async def disconnect(self) -> None:
        self.counters["open"] -= 1
        await self._end_session("client_gone")


@contextlib.asynccontextmanager
async def serving(bus: Bus, uri: str, zeroconf: bool = False) -> AsyncIterator[str]:
    """Serve Wyoming on `uri` (tcp://HOST:PORT, port 0: any free one) until the block ends;
    yields the bound tcp:// URI. `zeroconf`: register it on the local network for Home Assistant."""
    if not uri.startswith("tcp://"):
        raise ConfigError(f"wyoming.uri {uri!r}: voxbus serves tcp://HOST:PORT")
    host, _, port = uri.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"wyoming.uri {uri!r}: expected tcp://HOST:PORT")
    server = AsyncTcpServer(host, int(port))
    counters = {"connections": 0, "open": 0}  # ("open" is reported as sessions: it goes down too)

    def handler(reader, writer) -> WyomingHandler:
        counters["connections"] += 1
        return WyomingHandler(reader, writer, bus, float(bus.config.http.transcribe_timeout), counters)

    await server.start(handler)
    bound = server._server.sockets[0].getsockname()[1]  # (the wyoming server keeps asyncio's server there)
    micro = await discovery.announce(bus, "wyoming", "voxbus Wyoming server (a gateway)", f"tcp://{host}:{bound}",
                           lambda: ServiceStatus(service="wyoming", sessions=counters["open"],
                                                 counters={"connections": counters["connections"]}))
    if zeroconf:
        from wyoming.zeroconf import HomeAssistantZeroconf

        await HomeAssistantZeroconf(port=bound, name=bus.config.wyoming.name,
                                    host=None if host in ("0.0.0.0", "") else host).register_server()
    try:
        yield f"tcp://{host}:{bound}"
    finally:
        await micro.stop()
        await server.stop()
