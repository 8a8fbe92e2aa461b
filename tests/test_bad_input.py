"""Bad input is a 4xx, never a 500 and never a stall: each kind is refused with its own code
(most before any model work starts), the manager keeps serving, and a live session transcribing
at the same time is not delayed. Real server, real manager and models."""

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio

from tests.helpers import embedded_config, make_config, running_manager, wer
from voxbus.client import ModelClient
from voxbus.errors import BadRequest, ContextLengthExceeded, InvalidAudio
from voxbus.messages import AudioFormat
from voxbus.server import NatsServer

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

LIVE = "The weather today is sunny with a light breeze coming from the west."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache")
        async with running_manager(config) as (bus, manager):
            models = ModelClient.from_bus(bus)
            for model in ("whisper-tiny-en", "piper-joe", "gemma3-270m"):
                await models.load(model)
            yield bus, manager, models


def jobs(manager, model: str) -> int:
    return sum(w.jobs for w in manager.pool.slots[model].workers)


async def refused(call, error, manager, model: str, *, at_once: bool = True) -> BaseException:
    before = jobs(manager, model)
    started = time.monotonic()
    with pytest.raises(error) as info:
        await call
    assert not info.value.transient and 400 <= info.value.status < 500
    if at_once:
        assert time.monotonic() - started < 1.0
        assert jobs(manager, model) == before, "refused before the model saw it"
    return info.value


async def test_a_prompt_longer_than_the_context(stack):
    _, manager, models = stack
    prompt = "tell me more about the river " * 1200  # about 7,000 tokens; the context holds 4,096
    exc = await refused(models.complete(prompt, max_tokens=4), ContextLengthExceeded, manager, "gemma3-270m",
                        at_once=False)
    assert exc.status == 400 and "context" in exc.message and "4096" in exc.message
    exc = await refused(models.complete(messages=[{"role": "user", "content": prompt}], max_tokens=4),
                        ContextLengthExceeded, manager, "gemma3-270m", at_once=False)
    assert "context" in exc.message
    done = await models.complete("The sky is", max_tokens=3, temperature=0.0)
    assert done.usage.completion_tokens == 3


async def test_control_characters_in_speech_text(stack):
    _, manager, models = stack
    exc = await refused(models.synthesize("Hello\x00world."), BadRequest, manager, "piper-joe")
    assert "U+0000 at position 5" in exc.message
    await refused(models.synthesize("Bell\x07 ringing."), BadRequest, manager, "piper-joe")
    pcm, _ = await models.synthesize("Tabs\tand\nnewlines are fine.")
    assert len(pcm) > 0


async def test_float_audio_far_out_of_range_or_not_finite(stack):
    _, manager, models = stack
    f32 = AudioFormat(rate=16000, sample="f32le")
    huge = np.full(16000, 1e30, dtype="<f4").tobytes()  # one second, 64 KB
    exc = await refused(models.transcribe(huge, f32), InvalidAudio, manager, "whisper-tiny-en")
    assert "[-1, 1]" in exc.message and "1e+30" in exc.message
    await refused(models.transcribe(np.full(1600, np.inf, dtype="<f4").tobytes(), f32), InvalidAudio, manager,
                  "whisper-tiny-en")
    # A little over full scale is clipped, not refused: such audio is common after mixing.
    speech, meta = await models.synthesize(LIVE, format=f32)
    loud = (np.frombuffer(speech, dtype="<f4") * 1.8).astype("<f4").tobytes()
    reply = await models.transcribe(loud, f32)
    assert wer(LIVE, reply.text) <= 0.2, reply.text


async def test_text_over_the_synthesis_limit_is_refused_before_synthesis(stack):
    _, manager, models = stack
    exc = await refused(models.synthesize("word " * 4001), BadRequest, manager, "piper-joe")  # 20,005 characters
    assert "20000" in exc.message
    # Speech longer than one message is not an error: it comes back in parts (tests/test_plain_server.py).


async def test_bad_input_never_delays_a_live_session(stack):
    _, manager, models = stack
    speech, meta = await models.synthesize(LIVE, format=AudioFormat(rate=16000))
    latencies: list[float] = []
    done = asyncio.Event()

    async def live_session():  # utterance after utterance, as the STT service sends them
        while not done.is_set():
            started = time.monotonic()
            reply = await models.transcribe(speech, meta.format, session="live")
            latencies.append(time.monotonic() - started)
            assert wer(LIVE, reply.text) <= 0.2, reply.text

    live = asyncio.create_task(live_session())
    await asyncio.sleep(0.5)
    f32 = AudioFormat(rate=16000, sample="f32le")
    bad = [models.transcribe(np.full(16000, 1e30, dtype="<f4").tobytes(), f32) for _ in range(4)]
    bad += [models.transcribe(np.full(16000, np.nan, dtype="<f4").tobytes(), f32) for _ in range(4)]
    bad += [models.synthesize("nul\x00" * 10) for _ in range(4)]
    bad += [models.complete("river " * 6000, max_tokens=2)]
    outcomes = await asyncio.gather(*bad, return_exceptions=True)
    assert all(isinstance(o, (InvalidAudio, BadRequest)) for o in outcomes), outcomes
    await asyncio.sleep(1.0)
    done.set()
    await live
    assert len(latencies) >= 3 and max(latencies) < 2.0, latencies
