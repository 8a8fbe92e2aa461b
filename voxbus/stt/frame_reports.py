"""What the STT tells a session about its frames: gaps, frames never read, frames sent twice,
frames refused, and frames an end event named that never came. Each is an error event on the
session (`{p}.ctl.<sid>.error`) naming the frames; the counts of frames missing also go into its
`transcribed` event. Frame errors of one session stop after MAX_ERROR_EVENTS, the last saying so.
"""

from __future__ import annotations

from nats.aio.msg import Msg

from voxbus.bus import Bus
from voxbus.messages.audio import AudioFrame
from voxbus.session_errors import report_session_error
from voxbus.stt.session import SessionState
from voxbus.stt.vad import RATE

MAX_ERROR_EVENTS = 20
"""Frame error events per session (each later one would say the same): the 20th says so."""
MAX_GAPS_KEPT = 64
"""Reported gaps a session remembers, so a frame that comes after its gap was reported is not
also called a duplicate."""


class FrameReports:
    def __init__(self, bus: Bus, stats) -> None:
        self.bus = bus
        self.stats = stats

    async def report(self, s: SessionState, code: str, message: str, seq: int | None, msg_id: str, *,
                     capped: bool = False) -> None:
        """An error event on the session; frame errors stop after MAX_ERROR_EVENTS, the last saying so."""
        if capped:
            s.errors += 1
            if s.errors > MAX_ERROR_EVENTS:
                return
            if s.errors == MAX_ERROR_EVENTS:
                message += " (further errors of this session are not reported)"
        await report_session_error(self.bus, s.sid, code, message, seq=seq, msg_id=msg_id)

    async def gap(self, s: SessionState, msg: Msg, head: AudioFrame) -> None:
        """Frames between the last one taken and this one never came: say so, keep time true."""
        missing = s.missing_seconds(head.seq, head.offset, frame_seconds(msg.data, head))
        first, last = s.fed_seq + 1, head.seq - 1
        s.missing += last - first + 1
        keep_gap(s, first, last)
        s.fill_gap(missing)
        self.stats.gaps += 1
        span = frame_span(first, last)
        where = f" at {(s.t0 or 0.0) + s.pos_in / RATE - missing:.2f} s" if s.t0 is not None else ""
        await self.report(s, "frames_missing", f"{span} never arrived ({missing:.2f} s of audio{where}); the "
                          f"transcript there may miss words", first, f"{s.sid}:gap:{first}", capped=True)

    async def never_read(self, s: SessionState, seq: int) -> None:
        """Frames before `seq`, the first this run takes of a session, were not in the stream."""
        lost_from, lost_to = s.skip_through + 1, seq - 1
        s.missing += lost_to - lost_from + 1
        keep_gap(s, lost_from, lost_to)
        span = frame_span(lost_from, lost_to)
        await self.report(s, "frames_missing", f"{span} were never read: the stream no longer holds them (its "
                          f"limits dropped them before the STT service took them), or they were never sent",
                          lost_from, f"{s.sid}:gap:{lost_from}", capped=True)

    async def duplicate(self, s: SessionState, seq: int, msg: Msg) -> None:
        """A second message with a `seq` already taken, stored as a message of its own (not a
        redelivery, and not deduplicated by a Nats-Msg-Id): a client sending frames twice. The
        copy is dropped; consecutive copies are reported as one range."""
        run = s.duplicates
        if run is not None and seq == run[1] + 1:
            run[1] = seq
            return
        await self.flush_duplicates(s)
        s.duplicates = [seq, seq, msg.metadata.sequence.stream]

    async def flush_duplicates(self, s: SessionState) -> None:
        run, s.duplicates = s.duplicates, None
        if run is None:
            return
        first, last, stream_seq = run
        copies = "a new message" if first == last else "new messages"
        await self.report(s, "frames_duplicated", f"{frame_span(first, last)} came a second time, as {copies} "
                          f"(no Nats-Msg-Id, or sent again after the duplicate window); the copies are dropped",
                          first, f"{s.sid}:dup:{stream_seq}", capped=True)

    async def reject(self, s: SessionState, msg: Msg, code: str, message: str, seq: int | None) -> None:
        """A bad frame is this session's problem only: tell it, drop the frame, go on."""
        self.stats.rejected += 1
        await msg.term()
        await self.report(s, code, message, seq, f"{s.sid}:error:{msg.metadata.sequence.stream}", capped=True)

    async def give_up_missing(self, s: SessionState) -> None:
        """An ended session still waiting, after `session_idle`, for frames its end event named
        (lost, or refused for a bad header): finish it without them, and say so."""
        first, last = s.max_seq + 1, s.end_seq
        span = frame_span(first, last)
        if s.end_seq is not None:
            s.missing += s.end_seq - s.max_seq
        await self.report(s, "frames_missing", f"{span} named by the end event never arrived; the session is "
                          f"finished without them", first, f"{s.sid}:gap:{first}", capped=True)
        s.max_seq = max(s.max_seq, s.end_seq if s.end_seq is not None else s.max_seq)


def keep_gap(s: SessionState, first: int, last: int) -> None:
    if len(s.gaps) < MAX_GAPS_KEPT:
        s.gaps.append((first, last))


def stored_at(msg: Msg) -> float:
    """When the server stored a JetStream message (its clock), in seconds since the epoch."""
    return msg.metadata.timestamp.timestamp()


def stream_seq(msg) -> int:
    """A delivered message's sequence in its stream (the same for each redelivery of it)."""
    return msg.metadata.sequence.stream


def frame_span(first: int, last: int | None) -> str:
    return f"frame {first}" if first == last else f"frames {first}-{last}"


def frame_seconds(pcm: bytes, head: AudioFrame) -> float:
    fmt = head.format
    return len(pcm) / fmt.frame_bytes / fmt.rate if fmt.frame_bytes else 0.0
