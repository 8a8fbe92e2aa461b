"""How the STT words and groups its frame reports. Pure logic with fakes: a bus that records what
would be stored, a session with only the fields the reports touch, and messages with only the
metadata they read (the real path runs in tests/test_stt.py -k lost_and_repeated)."""

from types import SimpleNamespace

from voxbus.messages import SessionError, codec
from voxbus.stt.frame_reports import MAX_ERROR_EVENTS, FrameReports
from voxbus.subjects import Subjects


class RecordingBus:
    subjects = Subjects("vox")

    def __init__(self):
        self.stored = []

    async def store(self, subject, data, headers=None):
        self.stored.append((subject, codec.decode(data, SessionError), headers))


def message(stream_seq: int):
    return SimpleNamespace(metadata=SimpleNamespace(sequence=SimpleNamespace(stream=stream_seq)))


async def test_a_run_of_copies_is_one_report_and_separate_runs_are_two():
    bus = RecordingBus()
    reports = FrameReports(bus, stats=None)
    s = SimpleNamespace(sid="s1", duplicates=None, errors=0)
    for seq in range(100, 121):  # a client sent frames 100-120 again
        await reports.duplicate(s, seq, message(5000 + seq))
    await reports.duplicate(s, 300, message(6000))  # and later frame 300 once more
    await reports.flush_duplicates(s)
    await reports.flush_duplicates(s)  # nothing left: no third report
    assert [(e.code, e.seq) for _, e, _ in bus.stored] == [("frames_duplicated", 100), ("frames_duplicated", 300)]
    assert bus.stored[0][1].message.startswith("frames 100-120 came a second time, as new messages")
    assert bus.stored[1][1].message.startswith("frame 300 came a second time, as a new message")
    assert [h["Nats-Msg-Id"] for _, _, h in bus.stored] == ["s1:dup:5100", "s1:dup:6000"]
    assert all(subject == "vox.ctl.s1.error" for subject, _, _ in bus.stored)


async def test_frame_reports_of_one_session_stop_at_the_cap_saying_so():
    bus = RecordingBus()
    reports = FrameReports(bus, stats=None)
    s = SimpleNamespace(sid="s2", duplicates=None, errors=0)
    for seq in range(0, 3 * MAX_ERROR_EVENTS, 2):  # every other frame twice: a report each
        await reports.duplicate(s, seq, message(seq))
    await reports.flush_duplicates(s)
    assert len(bus.stored) == MAX_ERROR_EVENTS
    assert bus.stored[-1][1].message.endswith("(further errors of this session are not reported)")
