"""What the manager and a model's worker process say to each other over their socket pair.

Internal to one machine (never on NATS): msgpack-encoded msgspec Structs, each frame prefixed
with its length. Audio crosses as raw float32 bytes; at the sizes voxbus sends (an utterance is
at most 30 s, 1.9 MB) a copy through the socket costs well under a millisecond, so there is no
shared memory (bench/worker_overhead.py measures the whole hop).

    manager -> worker   Load, then any number of Transcribe / Synthesize / Generate (one at a
                        time), Cancel (of the running Generate) and finally Stop
    worker  -> manager  Loaded or Failed; per job: Text pieces (Generate) or Progress
                        (Synthesize), then Result or Failed; Cache events whenever the
                        conversation store changes
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Any, Literal, Union

import msgspec
from msgspec import Struct

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30


class _Msg(Struct, tag_field="t", kw_only=True):
    pass


# -- manager -> worker -----------------------------------------------------------------------
class Load(_Msg, tag="load"):
    backend: str
    model_id: str
    path: str
    config_path: str | None = None
    quantization: str | None = None
    device: str = "cpu"
    n_gpu_layers: int = 0
    threads: int | None = None
    options: dict[str, Any] = {}
    fingerprint: str = ""
    cache_dir: str | None = None
    conversations: dict[str, Any] | None = None
    """CacheConfig fields plus model_key, for LLMs that keep per-conversation KV states."""


class Transcribe(_Msg, tag="transcribe"):
    job: int
    audios: list[bytes]
    """float32 mono at the backend's sample rate, one per utterance."""
    language: str | None = None
    options: dict[str, Any] = {}
    batch: bool = False
    """True: one transcribe_batch call for all; False: exactly one utterance, one by one."""


class Synthesize(_Msg, tag="synthesize"):
    job: int
    text: str
    voice: str | None = None
    options: dict[str, Any] = {}


class Generate(_Msg, tag="generate"):
    job: int
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    options: dict[str, Any] = {}
    conversation: str | None = None


class Cancel(_Msg, tag="cancel"):
    job: int


class Stop(_Msg, tag="stop"):
    """Save conversation states (when spilling is on), unload and exit."""


# -- worker -> manager -----------------------------------------------------------------------
class Loaded(_Msg, tag="loaded"):
    pid: int
    footprint_hint: int = 0
    sample_rate: int = 0
    """STT: the rate it takes; TTS: the rate it speaks at (0: unknown)."""
    batch_max_seconds: float = 0.0
    """STT: longest utterance transcribe_batch takes; 0: no batching."""
    voices: list[str] = []


class Word(Struct, array_like=True):
    word: str
    start: float
    end: float
    probability: float


class Segment(Struct, array_like=True):
    start: float
    end: float
    text: str
    words: list[Word] = []


class Transcript(Struct, kw_only=True):
    segments: list[Segment]
    language: str
    duration: float


class Text(_Msg, tag="text"):
    job: int
    text: str


class Progress(_Msg, tag="progress"):
    """The job is still making headway (a synthesis between sentences): for the watchdog."""

    job: int


class Result(_Msg, tag="result"):
    job: int
    infer_ms: float
    transcripts: list[Transcript] | None = None
    audio: bytes | None = None
    """Synthesize: float32 mono in [-1, 1]."""
    sample_rate: int = 0
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = ""


class Failed(_Msg, tag="failed"):
    job: int | None = None
    """None: the load failed."""
    kind: Literal["bad_input", "context_length", "failed"] = "failed"
    """bad_input: the backend refused this input (a 4xx); failed: it broke (a 500)."""
    message: str = ""


class Cache(_Msg, tag="cache"):
    event: str
    conversation: str
    bytes: int = 0
    reason: str = ""


ToWorker = Union[Load, Transcribe, Synthesize, Generate, Cancel, Stop]
FromWorker = Union[Loaded, Text, Progress, Result, Failed, Cache]
Job = Union[Transcribe, Synthesize, Generate]

_encoder = msgspec.msgpack.Encoder()
to_worker = msgspec.msgpack.Decoder(ToWorker)
from_worker = msgspec.msgpack.Decoder(FromWorker)


def frame(msg: _Msg) -> bytes:
    body = _encoder.encode(msg)
    return _LEN.pack(len(body)) + body


async def read_frame(reader) -> bytes | None:
    """One frame from an asyncio StreamReader; None at end of stream."""
    import asyncio

    try:
        head = await reader.readexactly(_LEN.size)
        return await reader.readexactly(_LEN.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class BlockingChannel:
    """The worker's end: one thread, blocking reads of whole frames, and a non-blocking look for
    a waiting frame (a Cancel between tokens)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _exactly(self, n: int) -> bytearray | None:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                return None
            got += k
        return buf

    def recv(self) -> ToWorker | None:
        """The next frame; None at end of stream (the manager is gone)."""
        head = self._exactly(_LEN.size)
        if head is None:
            return None
        (size,) = _LEN.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        body = self._exactly(size)
        return None if body is None else to_worker.decode(body)

    def waiting(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def send(self, msg: _Msg) -> None:
        self.sock.sendall(frame(msg))
