"""`POST /v1/audio/speech`, OpenAI's shape: text in, audio out, synthesized by the manager.

`voice` is a voxbus voice (a TTS model id, or `model:speaker`); OpenAI's own voice names
(alloy, echo...) and models (tts-1...) mean the default voice. `wav` and `pcm` (OpenAI's: 16-bit
mono at 24 kHz) stream sentence by sentence as each is synthesized; `flac`, `mp3` and `opus` (in
Ogg) are encoded by libsndfile once the whole speech is ready.
"""

from __future__ import annotations

import asyncio
import io
import struct

import numpy as np
import soundfile as sf
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from voxbus.audio import pcm_samples
from voxbus.gateways.api_errors import ApiError
from voxbus.messages.audio import AudioFormat
from voxbus.sentences import SentenceSplitter, speakable

OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
OPENAI_MODELS = {"", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
MEDIA = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg"}
ENCODED = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
PCM_RATE = 24000
MAX_INPUT = 4096  # characters, as OpenAI's endpoint


async def speech(request: Request) -> Response:
    gw = request.app.state.gateway
    body = await gw.json_body(request)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "`input` must be a non-empty string", "invalid_value", "input")
    if len(text) > MAX_INPUT:
        raise ApiError(400, f"`input` is {len(text)} characters; at most {MAX_INPUT}", "string_above_max_length", "input")
    kind = str(body.get("response_format") or "mp3")
    if kind not in MEDIA:
        raise ApiError(400, f"response_format must be one of {', '.join(MEDIA)}", "invalid_value", "response_format")
    if kind in ENCODED and ENCODED[kind][0] not in sf.available_formats():
        raise ApiError(400, f"this server's libsndfile cannot write {kind}", "unsupported_format", "response_format")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 < speed <= 4.0:
        raise ApiError(400, "`speed` must be a number above 0.25 and at most 4.0", "invalid_value", "speed")
    model, voice = voice_of(gw, str(body.get("model") or ""), str(body.get("voice") or ""))
    rate = PCM_RATE if kind == "pcm" else (48000 if kind == "opus" else None)
    splitter = SentenceSplitter(first_clause_words=0)  # sentence by sentence: the first one plays sooner
    pieces = [p for p in splitter.feed(speakable(text) + " ") + splitter.flush() if p.strip()] or [text.strip()]

    async def synth(piece: str) -> tuple[bytes, AudioFormat]:
        pcm, meta = await gw.models.synthesize(piece, model=model, voice=voice, speed=float(speed),
                                               format=AudioFormat(rate=rate) if rate else None)
        return pcm, meta.format

    first, fmt = await synth(pieces[0])  # (an error here is still a clean JSON error reply)
    if kind in ("wav", "pcm"):
        async def chunks():
            yield (wav_header(fmt) if kind == "wav" else b"") + first
            for piece in pieces[1:]:
                yield (await synth(piece))[0]
        return StreamingResponse(chunks(), media_type=MEDIA[kind])
    rest = [(await synth(p))[0] for p in pieces[1:]]
    data = await asyncio.to_thread(encode, first + b"".join(rest), fmt, kind)
    return Response(data, media_type=MEDIA[kind])


def voice_of(gw, model: str, voice: str) -> tuple[str | None, str | None]:
    """(TTS model id, speaker) from OpenAI's `model` and `voice` fields."""
    if voice in OPENAI_VOICES or not voice:
        voice = ""
    name, _, speaker = voice.partition(":")
    if name:
        if gw.model_kind(name) != "tts":
            raise ApiError(404, f"no voice {voice!r}: use a TTS model id (GET /v1/models) or one of OpenAI's names",
                           "voice_not_found", "voice")
        return name, speaker or None
    if model not in OPENAI_MODELS:
        if gw.model_kind(model) != "tts":
            raise ApiError(404, f"no text-to-speech model {model!r}", "model_not_found", "model")
        return model, None
    return None, None


def wav_header(fmt: AudioFormat) -> bytes:
    """A streaming WAV header: the sizes say "unknown" (0xFFFFFFFF), as streaming players expect."""
    width = 2
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, fmt.channels, fmt.rate, fmt.rate * fmt.channels * width, fmt.channels * width, 16) + \
        b"data" + struct.pack("<I", 0xFFFFFFFF)


def encode(pcm: bytes, fmt: AudioFormat, kind: str) -> bytes:
    container, subtype = ENCODED[kind]
    out = io.BytesIO()
    samples = pcm_samples(pcm, fmt)
    sf.write(out, np.asarray(samples), fmt.rate, format=container, subtype=subtype)
    return out.getvalue()
