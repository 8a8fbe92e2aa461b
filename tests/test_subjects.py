import pytest

from voxbus.subjects import (
    MAX_SESSION_ID_LENGTH, InvalidSessionId, InvalidSubjectToken, Subjects, validate_session_id,
)


def test_per_session_subjects_use_prefix_and_id():
    s = Subjects("vox")
    assert s.audio_in("call-1") == "vox.audio.call-1.in"
    assert s.audio_out("call-1") == "vox.audio.call-1.out"
    assert s.transcript("call-1") == "vox.text.call-1.transcript"
    assert s.reply("call-1") == "vox.text.call-1.reply"
    assert s.say("call-1") == "vox.tts.call-1.say"
    assert s.control("call-1", "interrupt") == "vox.ctl.call-1.interrupt"
    assert s.session_from(s.transcript("call-1")) == "call-1"


def test_custom_prefix_and_streams():
    s = Subjects("lab")
    assert s.audio_in("a") == "lab.audio.a.in"
    assert s.stream("audio") == "LAB_AUDIO"
    assert s.stream_subjects("text") == ["lab.text.>", "lab.tts.>"]
    assert s.model("stt", "transcribe") == "lab.model.stt.transcribe"
    assert s.admin("model") == "lab.admin.model"
    assert s.consumer("stt") == "lab-stt"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "a>", ">", "a b", "tab\there", "new\nline", "x" * (MAX_SESSION_ID_LENGTH + 1), "ünï", "a/b"])
def test_bad_session_ids_are_rejected(bad):
    with pytest.raises(InvalidSessionId):
        validate_session_id(bad)
    with pytest.raises(InvalidSessionId):
        Subjects().audio_in(bad)


def test_bad_session_id_messages_say_why():
    with pytest.raises(InvalidSessionId, match="splits the subject"):
        validate_session_id("a.b")
    with pytest.raises(InvalidSessionId, match="wildcard"):
        validate_session_id("a*")
    with pytest.raises(InvalidSessionId, match="empty"):
        validate_session_id("")


@pytest.mark.parametrize("good", ["a", "call-1", "user@host", "2026-11-25T10:00:00", "A_b+c=d~e", "x" * MAX_SESSION_ID_LENGTH])
def test_good_session_ids_pass(good):
    assert validate_session_id(good) == good


def test_bad_tokens_rejected():
    with pytest.raises(InvalidSubjectToken):
        Subjects("vox.x")
    with pytest.raises(InvalidSubjectToken):
        Subjects().control("a", "explode")
    with pytest.raises(InvalidSubjectToken):
        Subjects().model("stt", "generate")
    with pytest.raises(InvalidSubjectToken):
        Subjects().stream("video")
