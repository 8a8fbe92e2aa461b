"""Every subject, stream and consumer name voxbus uses is built here, and nowhere else.

Layout (prefix ``vox`` by default)::

    {p}.audio.<sid>.in            client audio frames            stream {P}_AUDIO
    {p}.audio.<sid>.out           synthesized audio chunks       stream {P}_AUDIO
    {p}.text.<sid>.transcript     STT transcripts                stream {P}_TEXT
    {p}.text.<sid>.partial        STT interim transcripts        stream {P}_TEXT
    {p}.text.<sid>.reply          assistant reply chunks         stream {P}_TEXT
    {p}.tts.<sid>.say             text to speak                  stream {P}_TEXT
    {p}.ctl.<sid>.<event>         start/end/interrupt/error/transcribed  {P}_CTL
    {p}.admin.<event>             model lifecycle, resources     stream {P}_ADMIN
    {p}.model.<kind>.<verb>       ModelManager endpoints (request-reply, not stored)

The session id sits in the subject (not only in a header) so consumers can filter by it,
permissions can scope it and streams can partition on it. That makes the id part of routing,
so ids are validated: a ``.``, ``*``, ``>`` or whitespace would change which subscribers match.
"""

from __future__ import annotations

from voxbus.errors import InvalidSessionId, InvalidSubjectToken  # noqa: F401 (raised here, named here too)

import re
from dataclasses import dataclass

MAX_SESSION_ID_LENGTH = 128
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_\-:@+=~]+$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")

CONTROL_EVENTS = ("start", "end", "interrupt", "error", "transcribed")
ADMIN_EVENTS = ("model", "resources", "cache", "retention")
MODEL_VERBS = {
    "stt": ("transcribe",),
    "llm": ("generate", "cancel"),
    "tts": ("synthesize",),
    "admin": ("list", "load", "unload"),
}


def validate_session_id(sid: str) -> str:
    """Return sid unchanged, or raise InvalidSessionId saying what is wrong with it."""
    if isinstance(sid, str) and len(sid) <= MAX_SESSION_ID_LENGTH and _SESSION_ID_RE.fullmatch(sid):
        return sid  # the common case, once per frame: one regex; the checks below only explain a refusal
    if not isinstance(sid, str):
        raise InvalidSessionId(f"session id must be a string, got {type(sid).__name__}")
    if not sid:
        raise InvalidSessionId("session id is empty")
    if len(sid) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionId(f"session id is {len(sid)} characters long; the limit is {MAX_SESSION_ID_LENGTH}")
    for bad, why in ((".", "'.', which splits the subject"), ("*", "'*', a wildcard"), (">", "'>', a wildcard")):
        if bad in sid:
            raise InvalidSessionId(f"session id {sid!r} contains {why}")
    if any(ch.isspace() for ch in sid):
        raise InvalidSessionId(f"session id {sid!r} contains whitespace")
    if not _SESSION_ID_RE.fullmatch(sid):
        raise InvalidSessionId(
            f"session id {sid!r} may only use letters, digits and - _ : @ + = ~"
        )
    return sid


def _token(value: str, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise InvalidSubjectToken(f"{what} {value!r} must be letters, digits, '-' or '_'")
    return value


@dataclass(frozen=True)
class Subjects:
    """Subject and stream names under one prefix. Build one from config and pass it around."""

    prefix: str = "vox"

    def __post_init__(self) -> None:
        _token(self.prefix, "subject prefix")

    # -- per-session subjects -------------------------------------------------------------
    def audio_in(self, sid: str) -> str:
        return f"{self.prefix}.audio.{validate_session_id(sid)}.in"

    def audio_out(self, sid: str) -> str:
        return f"{self.prefix}.audio.{validate_session_id(sid)}.out"

    def transcript(self, sid: str) -> str:
        return f"{self.prefix}.text.{validate_session_id(sid)}.transcript"

    def partial(self, sid: str) -> str:
        return f"{self.prefix}.text.{validate_session_id(sid)}.partial"

    def reply(self, sid: str) -> str:
        return f"{self.prefix}.text.{validate_session_id(sid)}.reply"

    def say(self, sid: str) -> str:
        return f"{self.prefix}.tts.{validate_session_id(sid)}.say"

    def control(self, sid: str, event: str) -> str:
        if event not in CONTROL_EVENTS:
            raise InvalidSubjectToken(f"control event {event!r} is not one of {', '.join(CONTROL_EVENTS)}")
        return f"{self.prefix}.ctl.{validate_session_id(sid)}.{event}"

    def session_control(self, sid: str) -> str:
        """Every control event of one session."""
        return f"{self.prefix}.ctl.{validate_session_id(sid)}.*"

    def session_from(self, subject: str) -> str:
        """The session id of a per-session subject (the third token)."""
        parts = subject.split(".")
        if len(parts) < 4 or parts[0] != self.prefix:
            raise InvalidSubjectToken(f"{subject!r} is not a voxbus session subject")
        return parts[2]

    # -- wildcards for consumers ----------------------------------------------------------
    def all_audio_in(self) -> str:
        return f"{self.prefix}.audio.*.in"

    def all_audio_out(self) -> str:
        return f"{self.prefix}.audio.*.out"

    def all_say(self) -> str:
        return f"{self.prefix}.tts.*.say"

    def all_transcripts(self) -> str:
        return f"{self.prefix}.text.*.transcript"

    def all_partials(self) -> str:
        return f"{self.prefix}.text.*.partial"

    def all_replies(self) -> str:
        return f"{self.prefix}.text.*.reply"

    def all_control(self, event: str | None = None) -> str:
        """Every session's control events, or only those of one event type."""
        if event is None:
            return f"{self.prefix}.ctl.*.*"
        if event not in CONTROL_EVENTS:
            raise InvalidSubjectToken(f"control event {event!r} is not one of {', '.join(CONTROL_EVENTS)}")
        return f"{self.prefix}.ctl.*.{event}"

    def all_models(self) -> str:
        return f"{self.prefix}.model.>"

    def all_text(self) -> str:
        """Every session's transcripts and replies (the TEXT stream's `text` half)."""
        return f"{self.prefix}.text.>"

    def all_tts(self) -> str:
        return f"{self.prefix}.tts.>"

    @staticmethod
    def all_micro() -> str:
        """Every micro discovery request (`$SRV.PING/INFO/STATS`, with or without name and id)."""
        return "$SRV.>"

    @staticmethod
    def inbox(owner: str) -> str:
        """A connection's own reply-inbox prefix (with auth on, each user may read only its own)."""
        return f"_INBOX.{_token(owner, 'inbox owner')}"

    def all_admin(self) -> str:
        return f"{self.prefix}.admin.>"

    # -- admin and model endpoints ----------------------------------------------------------
    def admin(self, event: str) -> str:
        if event not in ADMIN_EVENTS:
            raise InvalidSubjectToken(f"admin event {event!r} is not one of {', '.join(ADMIN_EVENTS)}")
        return f"{self.prefix}.admin.{event}"

    def model(self, kind: str, verb: str) -> str:
        if verb not in MODEL_VERBS.get(kind, ()):
            raise InvalidSubjectToken(f"no model endpoint {kind}.{verb}")
        return f"{self.prefix}.model.{kind}.{verb}"

    def model_at(self, kind: str, verb: str, manager: str) -> str:
        """One manager's own subject for an endpoint: where a conversation's KV state is."""
        return f"{self.model(kind, verb)}.{_token(manager, 'manager id')}"

    def model_at_any(self, kind: str, verb: str) -> str:
        """Every manager's own subject for an endpoint (permissions)."""
        return f"{self.model(kind, verb)}.*"

    def model_at_mapped(self, kind: str, verb: str) -> str:
        """A subject-mapping destination keeping model_at_any's manager token."""
        return f"{self.model(kind, verb)}.{{{{wildcard(1)}}}}"

    # -- JetStream names -------------------------------------------------------------------
    def stream(self, family: str) -> str:
        """Stream names are upper-case and prefixed, so two prefixes can share one server."""
        if family not in STREAM_FAMILIES:
            raise InvalidSubjectToken(f"no stream family {family!r}")
        return f"{self.prefix.upper()}_{family.upper()}"

    def stream_subjects(self, family: str) -> list[str]:
        p = self.prefix
        return {
            "audio": [f"{p}.audio.>"],
            "text": [f"{p}.text.>", f"{p}.tts.>"],
            "ctl": [f"{p}.ctl.>"],
            "admin": [f"{p}.admin.>"],
        }[family]

    # -- the STT work stream (stt.partitions > 1) ------------------------------------------
    def stt_work_stream(self) -> str:
        """The stream that copies frames and end events for partitioned STT, each under its partition."""
        return f"{self.prefix.upper()}_STT_WORK"

    def stt_members_bucket(self) -> str:
        """Key-Value bucket of the live STT processes (one key each, expiring unless refreshed)."""
        return f"{self.prefix.upper()}_STT_MEMBERS"

    def stt_work_sources(self, partitions: int) -> list[tuple[str, str, str]]:
        """What the work stream copies: (stream family, subjects, stored as). Frames are stored as
        `<p>.sttwork.<sid>.in.<partition>`, end events as `<p>.sttwork.<sid>.end.<partition>`,
        the partition being NATS's hash of the session id."""
        p, part = self.prefix, f"{{{{partition({int(partitions)},1)}}}}"
        return [("audio", self.all_audio_in(), f"{p}.sttwork.{{{{wildcard(1)}}}}.in.{part}"),
                ("ctl", self.all_control("end"), f"{p}.sttwork.{{{{wildcard(1)}}}}.end.{part}")]

    def stt_partition(self, partition: int) -> str:
        """Filter subject of one partition of the work stream: its frames and end events."""
        return f"{self.prefix}.sttwork.*.*.{int(partition)}"

    @staticmethod
    def stt_work_kind(subject: str) -> tuple[str, int | None]:
        """("in" or "end", partition) of a work stream subject; (its kind, None) for an AUDIO or CTL one."""
        parts = subject.split(".")
        if len(parts) == 5 and parts[1] == "sttwork":
            return parts[3], int(parts[4])
        return ("end" if parts[-1] == "end" else "in"), None

    def upload_bucket(self) -> str:
        """JetStream Object Store bucket holding audio too large for one message (a transcribe
        request then names its object instead of carrying the PCM)."""
        return f"{self.prefix.upper()}_UPLOADS"

    def tenants_bucket(self) -> str:
        """Key-Value bucket of the deployment's tenants (key: tenant name, value: its quota in bytes)."""
        return f"{self.prefix.upper()}_TENANTS"

    def state_bucket(self) -> str:
        """JetStream Key-Value bucket where services record how far their durable consumers got."""
        return f"{self.prefix.upper()}_STATE"

    def consumer(self, service: str) -> str:
        """Durable consumer name of a voxbus service (shared by its replicas)."""
        return f"{self.prefix}-{_token(service, 'service name')}"

    def service_name(self, service: str = "model-manager") -> str:
        """NATS micro service name of the ModelManager, or of another voxbus service (stt, tts,
        assistant), discoverable via $SRV.PING."""
        return f"{self.prefix}-{_token(service, 'service name')}"

    def status(self, service: str) -> str:
        """Request subject of a service's ServiceStatus (not stored in any stream)."""
        return f"{self.prefix}.status.{_token(service, 'service name')}"

    def queue_group(self, service: str) -> str:
        return f"{self.prefix}-{_token(service, 'service name')}"

    @staticmethod
    def micro(verb: str, name: str | None = None, instance: str | None = None) -> str:
        """NATS micro discovery subject: ``$SRV.<VERB>[.<name>[.<id>]]`` (PING, INFO, STATS)."""
        if verb not in ("PING", "INFO", "STATS"):
            raise InvalidSubjectToken(f"no micro verb {verb!r}")
        parts = ["$SRV", verb] + [_token(t, "service token") for t in (name, instance) if t is not None]
        return ".".join(parts)


STREAM_FAMILIES = ("audio", "text", "ctl", "admin")
