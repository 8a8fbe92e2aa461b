"""Live audio from a microphone, for `voxbus publish --mic`, through sounddevice (PortAudio).

PortAudio calls back on its own thread with each block; blocks cross to the event loop through
a queue, so a slow publish never stalls the audio thread (a block that finds the queue full is
dropped, counted, and reported when recording ends). Anything that
stops a microphone from opening (no PortAudio library, no input device, a device that refuses
the rate) is a NoMicrophone error saying which, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from voxbus.errors import NoMicrophone
from voxbus.messages.audio import AudioFormat

QUEUE_BLOCKS = 500
"""Blocks (10 s of 20 ms ones) waiting for the publisher before new ones are dropped."""


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the module loads PortAudio when imported
        raise NoMicrophone(f"no microphone can be opened: the PortAudio library is missing ({exc}); "
                           f"install it (Debian/Ubuntu: apt install libportaudio2)") from None
    return sounddevice


def input_device(device: str | int | None = None) -> dict:
    """The input device to record from (the system's default when None), or NoMicrophone."""
    sd = _sounddevice()
    try:
        info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as exc:
        names = [d["name"] for d in _devices(sd) if d.get("max_input_channels", 0) > 0]
        have = f"input devices here: {', '.join(names)}" if names else "this machine has no audio input device"
        raise NoMicrophone(f"no microphone to record from ({exc}); {have}") from None
    if info.get("max_input_channels", 0) < 1:
        raise NoMicrophone(f"device {info.get('name')!r} has no input channels")
    return info


def _devices(sd) -> list[dict]:
    with contextlib.suppress(Exception):
        return list(sd.query_devices())
    return []


class Microphone:
    """``async for pcm in Microphone(fmt).blocks(): ...`` (s16 mono at `fmt.rate`)."""

    def __init__(self, rate: int = 16000, frame_ms: int = 20, device: str | int | None = None) -> None:
        self.format = AudioFormat(rate=rate, channels=1, sample="s16le")
        self.block = rate * frame_ms // 1000
        self.device = device
        self.info: dict = {}
        self.dropped = 0

    async def blocks(self) -> AsyncIterator[bytes]:
        sd = _sounddevice()
        self.info = input_device(self.device)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_BLOCKS)

        def put(data: bytes) -> None:
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self.dropped += 1

        def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread
            loop.call_soon_threadsafe(put, bytes(indata))

        try:
            stream = sd.RawInputStream(samplerate=self.format.rate, channels=1, dtype="int16", blocksize=self.block,
                                       device=self.device, callback=callback)
        except (ValueError, sd.PortAudioError) as exc:
            raise NoMicrophone(f"microphone {self.info.get('name')!r} cannot record 16-bit mono at "
                               f"{self.format.rate} Hz: {exc}") from None
        with stream:
            while True:
                yield await queue.get()
