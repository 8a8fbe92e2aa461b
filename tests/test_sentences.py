"""Cutting streamed text into pieces to speak (pure logic, no models)."""

from voxbus.sentences import SentenceSplitter, speakable


def pieces(chunks, **kw):
    splitter = SentenceSplitter(**kw)
    out = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out, splitter.flush()


def test_abbreviations_and_numbers_do_not_end_a_sentence():
    out, rest = pieces(["Dr. ", "Smith lives at 221B Baker St. ", "in London. He is 3.5 metres tall! ", "Is he?"],
                       first_clause_words=0)
    assert out == ["Dr. Smith lives at 221B Baker St. in London.", "He is 3.5 metres tall!"] and rest == ["Is he?"]


def test_a_sentence_goes_as_soon_as_it_is_known_complete():
    splitter = SentenceSplitter(first_clause_words=0)
    assert splitter.feed("Hello the") == [] and splitter.feed("re.") == []  # "there." or "there.5"?
    assert splitter.feed(" ") == ["Hello there."]  # whitespace where a next sentence could begin
    assert splitter.feed("Next one is") == [] and splitter.feed(" here.\nAnd") == ["Next one is here."]
    assert splitter.flush() == ["And"]


def test_the_first_piece_may_end_at_a_clause():
    out, rest = pieces(["It is sunny today, with a light breeze from the west. ", "Take a hat."])
    assert out == ["It is sunny today,", "with a light breeze from the west."] and rest == ["Take a hat."]
    out, _ = pieces(["Yes, it is. "])  # too short a clause: the whole sentence
    assert out == ["Yes, it is."]


def test_control_characters_become_spaces():
    assert speakable("Hello\x00 world\x1b.\n\tOk") == "Hello  world .\n\tOk"
