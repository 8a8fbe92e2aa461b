"""faster-whisper (CTranslate2) speech-to-text."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from voxbus.manager.backends.base import BackendError, LoadSpec, Segment, SttBackend, TranscribeResult, Word

log = logging.getLogger(__name__)

WINDOW_S = 30  # Whisper's encoder window: the longest audio a batch row can hold
DEFAULT_PAD_S = 10  # see BatchingConfig.pad_seconds
# A window ending right after the speech made the decoder repeat itself; rows longer than
# pad_seconds get at least a second of silence after them (docs/BENCHMARKS.md).
TAIL_S = 1.0
# On a CPU the encoder is compute bound and batching only saves decoder time: past about 80 s
# of padded audio per call (8 rows of 10 s, 2 of 30 s) a bigger batch was no faster per
# utterance, and 8 or 16 rows of 30 s were slower than one by one (2 cores).
CPU_BATCH_AUDIO_S = 80
# Generation cap per row: fast speech is about 5 tokens/s, plus two timestamps per segment. A row
# that reaches its cap is taken for a decoder stuck repeating itself and is redone through the
# full 30 s path.
TOKENS_PER_S = 8
TOKENS_SLACK = 10
SINGLE_MAX_TOKENS = 220  # Whisper's max_length is 448 tokens for prompt and output together
TIME_STEP = 0.02  # seconds per timestamp token
PREPEND_PUNCTUATION = "\"'“¿([{-"  # faster-whisper's defaults: punctuation joined to the next word,
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # ...and to the word before it


def batch_window(seconds: float, pad_seconds: float) -> int:
    """Padded window (whole seconds) for a row of this duration."""
    return int(min(WINDOW_S, math.ceil(max(pad_seconds, seconds + TAIL_S))))


def _continues(ids: list[int], timestamp_begin: int) -> bool:
    """Whether the decoder handed the rest over to a next window: it closed a segment and opened
    another (two timestamps) and stopped. Whisper does that when the next words would run past
    the window; in one batched window they would be lost, so such a row is redone through the
    sequential path, which moves its window on and decodes them."""
    return len(ids) >= 2 and ids[-1] >= timestamp_begin and ids[-2] >= timestamp_begin


def row_segments(ids: list[int], tokenizer: Tokenizer, duration: float) -> list[Segment]:
    """One row's timestamped segments (<|t0|> words <|t1|> ...). Text the decoder placed after the
    audio's end (in the silence the row was padded with), or a verbatim repeat of the segment before
    it, is a short window's hallucination: it is dropped."""
    begin = tokenizer.timestamp_begin
    out: list[Segment] = []
    start, words = None, []

    def close(end: float) -> None:
        text = tokenizer.decode(words).strip()
        seg_start = start if start is not None else (out[-1].end if out else 0.0)
        repeat = out and len(text.split()) > 3 and text.lower() == out[-1].text.lower()
        if text and seg_start < duration - 0.05 and not repeat:
            out.append(Segment(start=round(seg_start, 2), end=round(min(max(end, seg_start), duration), 2), text=text,
                               tokens=list(words)))

    for t in ids:
        if t < begin:
            words.append(t)
            continue
        at = (t - begin) * TIME_STEP
        if words:
            close(at)
            start, words = None, []
        else:
            start = at
    if words:
        close(duration)
    return out


def token_cap(seconds: float) -> int:
    return math.ceil(seconds * TOKENS_PER_S) + TOKENS_SLACK


class WhisperBackend(SttBackend):
    name = "faster_whisper"
    # CTranslate2 compute types; the manager maps 8-bit/16-bit to these.
    quantizations = ("int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16", "float32")
    batch_max_seconds = WINDOW_S  # longer utterances take the one-by-one path

    def __init__(self) -> None:
        self.model: WhisperModel | None = None
        self.english_only = False
        self._tokenizers: dict[str, tuple[Tokenizer, list[int]]] = {}

    def load(self, spec: LoadSpec) -> None:
        if not (spec.path / "model.bin").is_file():
            raise BackendError(f"{spec.path} is not a CTranslate2 Whisper model (no model.bin)")
        compute = spec.quantization or "default"
        try:
            self.model = WhisperModel(
                str(spec.path), device=spec.device, compute_type=compute,
                cpu_threads=spec.threads or 0, local_files_only=True,
            )
        except ValueError as exc:  # CTranslate2 rejects compute types the device lacks
            raise BackendError(f"cannot load {spec.model_id} with compute type {compute!r}: {exc}") from None
        self.english_only = not self.model.model.is_multilingual

    def transcribe(self, audio: np.ndarray, language: str | None, options: dict[str, Any]) -> TranscribeResult:
        assert self.model is not None, "transcribe before load"
        seconds = len(audio) / self.sample_rate
        segments, info = self.model.transcribe(
            audio,
            language=None if self.english_only else language,
            beam_size=int(options.get("beam_size", 1)),
            vad_filter=False,  # the STT service cuts utterances; the manager transcribes what it gets
            condition_on_previous_text=False,
            without_timestamps=False,
            # Noise can make the decoder babble to its 448-token limit ("!!!!..."), seconds of work
            # per window: twice the batched path's cap leaves real speech alone and bounds that.
            max_new_tokens=min(SINGLE_MAX_TOKENS, 2 * token_cap(min(seconds, WINDOW_S))),
            word_timestamps=bool(options.get("words")),
        )
        # The segments generator is lazy: consuming it *is* the inference, so do it here,
        # in the model's worker thread, never on the event loop.
        out = [Segment(start=float(s.start), end=float(s.end), text=s.text.strip(),  # (numpy floats with words)
                       words=[Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                              for w in s.words or []]) for s in segments]
        return TranscribeResult(segments=out, language=info.language, duration=len(audio) / self.sample_rate)

    def transcribe_batch(self, audios: list[np.ndarray], language: str | None,
                         options: dict[str, Any]) -> list[TranscribeResult]:
        """Several utterances (each at most 30 s) through one encoder and one decoder call per
        window size; greedy (or beam) search, timestamped segments per utterance.

        WhisperModel.transcribe pads every input to 30 s of mel frames (most of the cost for a
        short utterance); the CTranslate2 encoder accepts fewer frames, so rows are padded only to
        batch_window(). Rows are grouped by window so one long utterance does not stretch the rest.
        """
        assert self.model is not None, "transcribe before load"
        pad_s = float(options.get("pad_seconds", DEFAULT_PAD_S))
        seconds = [len(a) / self.sample_rate for a in audios]
        if max(seconds) > WINDOW_S:
            raise BackendError(f"a batched utterance is at most {WINDOW_S} s, got {max(seconds):.1f} s")
        groups: dict[int, list[int]] = {}
        for i in sorted(range(len(audios)), key=seconds.__getitem__):
            groups.setdefault(batch_window(seconds[i], pad_s), []).append(i)
        results: list[TranscribeResult | None] = [None] * len(audios)
        for window, rows in groups.items():
            step = len(rows) if self.model.model.device != "cpu" else max(1, CPU_BATCH_AUDIO_S // window)
            for at in range(0, len(rows), step):
                chunk = rows[at:at + step]
                decoded = self._decode([audios[i] for i in chunk], window, language, int(options.get("beam_size", 1)),
                                       bool(options.get("words")))
                for i, (segs, lang, runaway) in zip(chunk, decoded):
                    if runaway:
                        log.info("batched row of %.1f s hit its token cap or went on past its window; redoing it "
                                 "one by one", seconds[i])
                        results[i] = self.transcribe(audios[i], language, options)
                    else:
                        results[i] = TranscribeResult(segments=segs, language=lang, duration=seconds[i])
        return results  # type: ignore[return-value]

    def _decode(self, audios: list[np.ndarray], window: int, language: str | None,
                beam_size: int, words: bool = False) -> list[tuple[list[Segment], str, bool]]:
        """(segments, language, redo it: the cap was hit or the decoder went on past the window)
        per row, all padded to `window` seconds.

        Short windows tempt the decoder to repeat itself. Two things kept it from that (192
        utterances, docs/BENCHMARKS.md): padding the waveform with silence before the log-mel, as
        Whisper's training audio was (rather than the mel frames with zeros), and decoding with
        timestamps, so the model marks where the speech ends before it stops.
        """
        model = self.model
        frames = window * model.frames_per_second
        samples = window * self.sample_rate
        feats = np.stack([pad_or_trim(model.feature_extractor(np.pad(a, (0, max(0, samples - len(a)))), padding=0),
                                      frames) for a in audios])
        encoded = model.encode(feats.astype(np.float32, copy=False))
        lang = language if model.model.is_multilingual else None
        tokenizer, suppress = self._tokenizer(lang or "en")
        prompt = list(tokenizer.sot_sequence)  # timestamps on: no <|notimestamps|>
        prompts = [list(prompt) for _ in audios]
        langs = [lang or "en"] * len(audios)
        if model.model.is_multilingual and lang is None:  # detect each row's own language
            at = prompt.index(tokenizer.language)
            for i, found in enumerate(model.model.detect_language(encoded)):
                code = found[0][0]  # "<|xx|>"
                prompts[i][at] = tokenizer.tokenizer.token_to_id(code)
                langs[i] = code[2:-2]
        caps = [token_cap(len(a) / self.sample_rate) for a in audios]
        # CTranslate2 generates at most min(max_length / 2, max_length - prompt) tokens for Whisper.
        max_length = min(model.max_length, max(2 * max(caps), max(caps) + len(prompt)))
        limit = min(max_length // 2, max_length - len(prompt))
        results = model.model.generate(encoded, prompts, beam_size=beam_size, max_length=max_length,
                                       suppress_blank=True, suppress_tokens=suppress)
        rows = [row_segments(r.sequences_ids[0], tokenizer, len(a) / self.sample_rate) for r, a in zip(results, audios)]
        if words:
            self._align_words(encoded, tokenizer, rows, audios)
        return [(segs, code, len(r.sequences_ids[0]) >= min(cap, limit) or _continues(r.sequences_ids[0], tokenizer.timestamp_begin))
                for segs, r, code, cap in zip(rows, results, langs, caps)]

    def _align_words(self, encoded, tokenizer: Tokenizer, rows: list[list[Segment]], audios: list[np.ndarray]) -> None:
        """Word timings for a batch's rows, in one call: the decoder's cross-attention aligned to
        each row's text over its own frames (faster-whisper's word alignment, as its batched
        pipeline runs it, with its punctuation rules). A row with no text gets one empty segment
        there, so every row keeps its place in the encoder output."""
        if not any(rows):
            return
        hop = self.model.feature_extractor.hop_length
        batch = [[{"tokens": s.tokens, "start": s.start, "end": s.end, "seek": 0} for s in segs]
                 or [{"tokens": [], "start": 0.0, "end": 0.0, "seek": 0}] for segs in rows]
        self.model.add_word_timestamps(batch, tokenizer, encoded, [max(1, len(a) // hop) for a in audios],
                                       PREPEND_PUNCTUATION, APPEND_PUNCTUATION, 0.0)
        for segs, aligned in zip(rows, batch):
            for s, d in zip(segs, aligned):
                s.words = [Word(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"]))
                           for w in d.get("words", [])]

    def _tokenizer(self, language: str) -> tuple[Tokenizer, list[int]]:
        if language not in self._tokenizers:
            tok = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                            language=language)
            self._tokenizers[language] = (tok, list(get_suppressed_tokens(tok, [-1])))
        return self._tokenizers[language]

    @classmethod
    def supports_cuda(cls) -> bool:
        import ctranslate2  # a faster-whisper dependency; only backends may import it

        return ctranslate2.get_cuda_device_count() > 0

    def unload(self) -> None:
        self.model = None
        self._tokenizers.clear()

    def footprint_hint(self) -> int:
        return 0
