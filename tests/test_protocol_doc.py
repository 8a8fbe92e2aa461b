"""docs/protocol.md is generated from the code; it must be current and cover every message and subject."""

from __future__ import annotations

import inspect
from pathlib import Path

import msgspec
import pytest

from voxbus import protocol_doc
from voxbus.messages import admin, audio, control, model, text
from voxbus.subjects import ADMIN_EVENTS, CONTROL_EVENTS, MODEL_VERBS, STREAM_FAMILIES, Subjects

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
SID = protocol_doc.SID


@pytest.fixture(scope="module")
def generated() -> str:
    return protocol_doc.render()


def wire_structs() -> list[type]:
    return [obj for mod in (audio, text, control, admin, model) for name, obj in vars(mod).items()
            if inspect.isclass(obj) and issubclass(obj, msgspec.Struct) and obj.__module__ == mod.__name__
            and not name.startswith("_")]


def test_doc_is_current(generated: str) -> None:
    assert DOC.exists(), "run python -m voxbus.protocol_doc docs/protocol.md"
    assert DOC.read_text() == generated, "run python -m voxbus.protocol_doc docs/protocol.md"


def test_every_struct_has_a_section(generated: str) -> None:
    headings = {line[4:].strip() for line in generated.splitlines() if line.startswith("### ")}
    structs = wire_structs()
    assert len(structs) > 30
    missing = [cls.__name__ for cls in structs if cls.__name__ not in headings]
    assert not missing, f"no section for {missing}"


def test_every_subject_family_appears(generated: str) -> None:
    s = Subjects(protocol_doc.S.prefix)
    subjects = [s.audio_in(SID), s.audio_out(SID), s.transcript(SID), s.reply(SID), s.say(SID)]
    subjects += [s.control(SID, e) for e in CONTROL_EVENTS] + [s.admin(e) for e in ADMIN_EVENTS]
    subjects += [s.model(kind, verb) for kind, verbs in MODEL_VERBS.items() for verb in verbs]
    subjects += [s.stream(f) for f in STREAM_FAMILIES]
    subjects += [p for f in STREAM_FAMILIES for p in s.stream_subjects(f)]
    missing = [subject for subject in subjects if f"`{subject}`" not in generated]
    assert not missing, f"not documented: {missing}"


def test_field_docs_come_from_the_source(generated: str) -> None:
    # An attribute docstring, a Meta description and a field inherited from a private base.
    assert "Frame number in the session, from 0, no gaps." in generated
    assert "samples per second per channel" in generated
    assert "Model id; None routes to the configured default" in generated


def test_check_flag(tmp_path: Path, generated: str) -> None:
    out = tmp_path / "protocol.md"
    assert protocol_doc.main([str(out)]) == 0
    assert protocol_doc.main(["--check", str(out)]) == 0
    out.write_text(generated + "stale\n")
    assert protocol_doc.main(["--check", str(out)]) == 1
