"""Utterance cutting from speech probabilities: pure logic, fed made-up probabilities (a fake VAD)."""

import numpy as np

from voxbus.stt.cutter import CutterSettings, UtteranceCutter

W = 512
S = CutterSettings(threshold=0.5, min_silence_s=W * 10 / 16000, min_speech_s=W * 4 / 16000,
                   max_utterance_s=W * 40 / 16000, pre_roll_s=W * 2 / 16000, post_roll_s=W / 16000)


def probs(*runs: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, p, dtype=np.float32) for p, n in runs])


def test_two_phrases_separated_by_silence_are_two_cuts_with_pre_and_post_roll():
    c = UtteranceCutter(S)
    cuts = c.push(probs((0.1, 20), (0.9, 30), (0.05, 20), (0.9, 10), (0.05, 20)), 0)
    assert [(x.start // W, x.end // W) for x in cuts] == [(18, 51), (68, 81)]
    assert not c.open and c.safe_position() == 100 * W - 2 * W


def test_a_short_burst_is_dropped_and_its_audio_released():
    c = UtteranceCutter(S)
    assert c.push(probs((0.1, 10), (0.9, 2), (0.1, 30)), 0) == []
    assert c.safe_position() == 40 * W


def test_hysteresis_keeps_a_soft_tail_inside_the_utterance():
    c = UtteranceCutter(S)
    cuts = c.push(probs((0.9, 10), (0.4, 15), (0.9, 10), (0.0, 12)), 0)  # 0.4: below start, above end
    assert [(x.start // W, x.end // W) for x in cuts] == [(0, 36)]


def test_long_speech_is_cut_at_its_quietest_recent_window():
    c = UtteranceCutter(S)
    p = probs((0.9, 35), (0.6, 1), (0.9, 10))  # the 0.6 window is the quietest near the limit
    cuts = c.push(p, 0)
    assert [(x.start // W, x.end // W) for x in cuts] == [(0, 35)]
    assert c.open and c.safe_position() == 35 * W  # the rest stays open, nothing before it is needed
    tail = c.finish()
    assert [(x.start // W, x.end // W) for x in tail] == [(35, 46)]


def test_open_utterance_holds_its_audio_and_finish_closes_it():
    c = UtteranceCutter(S)
    assert c.push(probs((0.0, 10), (0.9, 8)), 0) == []
    assert c.open and c.safe_position() == 8 * W
    assert [(x.start // W, x.end // W) for x in c.finish()] == [(8, 18)]


def test_windows_arrive_in_pieces_like_a_stream():
    whole = probs((0.1, 20), (0.9, 30), (0.05, 20), (0.9, 10), (0.05, 20))
    c = UtteranceCutter(S)
    cuts = []
    for i in range(0, len(whole), 7):
        cuts += c.push(whole[i:i + 7], i * W)
    assert [(x.start // W, x.end // W) for x in cuts] == [(18, 51), (68, 81)]
