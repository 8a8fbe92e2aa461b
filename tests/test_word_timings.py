"""Word timings from the real Whisper model through the manager: the batched path (cross-attention
alignment over each row's own frames) and the one-by-one path (faster-whisper's own), and the
STT's transcripts in session time."""

import asyncio

import numpy as np
import pytest

from tests.helpers import make_config, running_manager, wer
from tests.speech import speak
from voxbus.audio import encode_pcm
from voxbus.client import ModelClient
from voxbus.messages import AudioFormat

pytestmark = pytest.mark.models

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "We will meet at the station at seven tonight.",
             "Please bring the blue folder to the office."]


def check_words(reply, sentence: str, duration: float) -> None:
    words = reply.words
    assert words, reply
    assert wer(sentence, " ".join(w.word for w in words)) <= 0.2, (sentence, [w.word for w in words])
    assert all(0 <= w.start <= w.end <= duration + 0.05 for w in words), words
    assert all(a.start <= b.start for a, b in zip(words, words[1:])), words
    assert words[-1].end - words[0].start > 0.5 * (reply.segments[-1].end - reply.segments[0].start), words
    assert all(0.0 <= w.probability <= 1.0 for w in words)


async def test_words_come_from_the_batched_and_the_one_by_one_path(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        spoken = [await speak(client, [s], lead_s=0.3) for s in SENTENCES]
        pcm = [(encode_pcm(a, AudioFormat(rate=r)), AudioFormat(rate=r), len(a) / r) for a, r in spoken]
        replies = await asyncio.gather(*(client.transcribe(p, f, words=True) for p, f, _ in pcm),
                                       client.transcribe(*pcm[0][:2]))
        assert max(r.batch_size for r in replies[:3]) > 1, [r.batch_size for r in replies]  # they shared a batch
        for reply, sentence, (_, _, seconds) in zip(replies, SENTENCES, pcm):
            check_words(reply, sentence, seconds)
        assert replies[3].words == [] and wer(SENTENCES[0], replies[3].text) <= 0.2  # not asked for: none
        # Past 30 s an utterance is not batched: faster-whisper's own transcribe gives the words.
        audio, rate = spoken[1]
        long = np.concatenate([np.zeros(int(29.0 * rate), np.float32), audio])
        reply = await client.transcribe(encode_pcm(long, AudioFormat(rate=rate)), AudioFormat(rate=rate), words=True)
        assert reply.batch_size == 1
        check_words(reply, reply.text, len(long) / rate)  # (Whisper may also hear words in the long silence)
        said = [w for w in reply.words if w.word.strip(".,").lower() in ("station", "tonight")]
        assert len(said) == 2 and all(w.start > 28.5 for w in said), reply.words  # where they were said
