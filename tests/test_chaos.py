"""The chaos run (bench/chaos.py) in its short form, and the audit's counting rules.

The short run is the real thing at a smaller size: 3 live sessions through real `voxbus manager`,
`voxbus stt` and `voxbus publish --realtime` processes while the STT and the manager are SIGKILLed,
nats-server is restarted, the manager is SIGSTOPped, the STT's consumer is deleted and a foreign
stream fills the store. The full run (8 sessions, 3 STT kills, 20 s SIGSTOP) is in bench/.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from chaos_audit import SessionAudit, compare_utterances  # noqa: E402

from voxbus.messages import Transcript  # noqa: E402


def utt(index: int, first: int, last: int) -> Transcript:
    return Transcript(session="s", utterance=index, text="x", start=first * 0.02, end=last * 0.02,
                      first_seq=first, last_seq=last)


BASELINE = [utt(0, 20, 120), utt(1, 160, 300), utt(2, 340, 400)]


def test_the_audit_counts_uncovered_utterances_and_frames_transcribed_twice():
    """Pure counting over hand-made transcripts (no bus)."""
    assert compare_utterances(BASELINE, BASELINE) == (0, 0)
    split = [utt(0, 20, 120), utt(1, 160, 230), utt(2, 231, 300), utt(3, 340, 400)]  # cut differently: fine
    assert compare_utterances(split, BASELINE) == (0, 0)
    assert compare_utterances([utt(0, 20, 120), utt(1, 340, 400)], BASELINE) == (1, 0)
    again = [utt(0, 20, 120), utt(1, 160, 300), utt(2, 160, 300), utt(3, 340, 400)]  # redone under a new index
    assert compare_utterances(again, BASELINE) == (0, 1)
    same_index = [utt(0, 20, 120), utt(1, 160, 300), utt(1, 340, 400)]
    assert compare_utterances(same_index, BASELINE) == (0, 1)


def test_loss_counts_as_silent_unless_somebody_was_told():
    quiet = SessionAudit(sid="a", sent=100, stored=90, frames_lost=10, utterances_lost=1, transcribed_events=1)
    assert quiet.lost_silently == 10 + 1
    told = SessionAudit(sid="b", sent=100, stored=90, frames_lost=10, frames_reported=10, utterances_lost=1,
                        transcribed_events=1)
    assert told.lost_silently == 0
    unfinished = SessionAudit(sid="c", sent=100, stored=100)
    assert unfinished.lost_silently == 1
    twice = SessionAudit(sid="d", sent=100, stored=100, transcribed_events=2, frames_duplicated=3)
    assert twice.duplicated == 4


@pytest.mark.models
def test_the_short_chaos_run_loses_nothing_silently_and_duplicates_nothing():
    run = subprocess.run([sys.executable, str(BENCH / "chaos.py"), "--short"], cwd=BENCH,
                         capture_output=True, text=True, timeout=600)
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result["faults"] == ["kill_stt", "kill_manager", "restart_server", "stop_manager",
                                "delete_consumer", "fill_foreign"], run.stdout
    assert result["faults_failed"] == [], run.stdout
    assert result["lost_silently"] == 0 and result["duplicated"] == 0, run.stdout
    assert result["baseline"] >= 3 * 6, run.stdout  # every session's utterances were audited
    assert run.returncode == 0, run.stdout[-3000:]
