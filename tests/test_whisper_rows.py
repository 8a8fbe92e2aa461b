"""Reading one batched Whisper row's tokens into segments (pure logic: a stand-in tokenizer whose
word tokens are their own text, and timestamp tokens from 1000 up, as Whisper's come after its text
vocabulary)."""

from voxbus.manager.backends.whisper import _continues, row_segments

BEGIN = 1000
WORDS = {1: "The", 2: "printer", 3: "is", 4: "out", 5: "of", 6: "paper.", 7: "Yes."}


class Tokenizer:
    timestamp_begin = BEGIN

    def decode(self, ids):
        return " ".join(WORDS[i] for i in ids)


def ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


SENTENCE = [1, 2, 3, 4, 5, 6]


def test_segments_keep_their_times():
    segs = row_segments([ts(0.0), *SENTENCE, ts(1.8), ts(2.0), 7, ts(2.4)], Tokenizer(), duration=2.6)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 1.8, "The printer is out of paper."), (2.0, 2.4, "Yes.")]


def test_a_sentence_said_again_in_the_padding_is_dropped():
    """The doubled "The printer ... paper." of a short clip: the repeat follows the real one."""
    doubled = [ts(0.0), *SENTENCE, ts(2.2), ts(2.2), *SENTENCE, ts(4.4)]
    assert [s.text for s in row_segments(doubled, Tokenizer(), duration=2.5)] == ["The printer is out of paper."]
    # Anything the decoder placed after the audio's end is not speech either.
    beyond = [ts(0.0), *SENTENCE, ts(2.2), ts(2.6), 7, ts(3.0)]
    assert [s.text for s in row_segments(beyond, Tokenizer(), duration=2.5)] == ["The printer is out of paper."]
    # A short word said twice is real speech ("Yes. Yes."): kept.
    twice = [ts(0.0), 7, ts(0.5), ts(0.6), 7, ts(1.0)]
    assert [s.text for s in row_segments(twice, Tokenizer(), duration=1.2)] == ["Yes.", "Yes."]


def test_a_row_that_goes_on_past_its_window_is_noticed():
    assert _continues([ts(0.0), *SENTENCE, ts(26.2), ts(26.2)], BEGIN)
    assert not _continues([ts(0.0), *SENTENCE, ts(2.2)], BEGIN)
