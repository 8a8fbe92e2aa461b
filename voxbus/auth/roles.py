"""What each voxbus role may publish and subscribe to: NATS permissions, least privilege.

A role gets the subjects of its own work, the JetStream API calls for the streams it reads (its
consumers, direct gets, acks and flow control) and a reply inbox of its own
(`_INBOX.<its public key>.>`), never `_INBOX.>`. Services answer requests through
`allow_responses` (they may publish to the reply subject of a request they received, and to no
other inbox). Only the operator may create, change, purge or delete streams, load or unload
models, or read everything.
"""

from __future__ import annotations

from voxbus.subjects import Subjects

ROLES = ("manager", "stt", "tts", "assistant", "client", "operator")

STREAMING_RESPONSES = {"max": 1_000_000, "expires": "10m"}
"""A streamed reply (generation chunks, speech chunks, heartbeats) is many messages to one inbox."""


def inbox_prefix(public_key: str) -> str:
    return Subjects.inbox(public_key)


def js_read(stream: str) -> list[str]:
    """The JetStream API calls for reading one stream: its info, consumers on it (durable or
    ephemeral, push or pull), direct and API message gets, acks and flow-control replies."""
    api = "$JS.API"
    return [f"{api}.STREAM.INFO.{stream}", f"{api}.CONSUMER.CREATE.{stream}", f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>", f"{api}.CONSUMER.INFO.{stream}.>",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.>", f"{api}.DIRECT.GET.{stream}", f"{api}.DIRECT.GET.{stream}.>",
            f"{api}.STREAM.MSG.GET.{stream}", f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]


def own_consumers(stream: str, *durables: str) -> list[str]:
    """Deleting the service's own durables: it binds one again at its ack floor by deleting and
    recreating it (consumers.py), after a restart or a partition move."""
    return [f"$JS.API.CONSUMER.DELETE.{stream}.{durable}" for durable in durables]


def _state(s: Subjects) -> list[str]:
    """The services' Key-Value bucket of consumer floors, and the list of tenants they serve."""
    bucket = s.state_bucket()
    return [f"$KV.{bucket}.>", *js_read(f"KV_{bucket}"), *js_read(f"KV_{s.tenants_bucket()}")]


def permissions(role: str, s: Subjects, public_key: str) -> dict:
    """The nats-server `permissions` block of a user of `role` (prefix from `s`)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if role == "operator":
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    uploads = s.upload_bucket()
    pub = ["$JS.API.INFO"]
    sub = [inbox_prefix(public_key) + ".>"]
    responses = None
    if role == "manager":
        sub += [s.all_models(), s.all_control("interrupt"), s.all_micro()]
        pub += [s.all_admin(), *js_read(s.stream("admin")), f"$O.{uploads}.>", *js_read(f"OBJ_{uploads}"),
                f"$JS.API.STREAM.PURGE.OBJ_{uploads}"]
        responses = STREAMING_RESPONSES
    elif role == "stt":
        sub += [s.status("stt"), s.all_micro()]
        pub += [s.all_transcripts(), s.all_partials(), s.all_control("error"), s.all_control("transcribed"), s.admin("retention"),
                s.model("stt", "transcribe"), *js_read(s.stream("audio")), *js_read(s.stream("ctl")),
                *js_read(s.stream("text")), *_state(s),
                *js_read(s.stt_work_stream()), f"$KV.{s.stt_members_bucket()}.>", *js_read(f"KV_{s.stt_members_bucket()}"),
                *own_consumers(s.stream("audio"), s.consumer("stt")), *own_consumers(s.stream("ctl"), s.consumer("stt-end")),
                *own_consumers(s.stt_work_stream(), "*")]  # (only the STT consumes the work stream)
        responses = {"max": 1}
    elif role == "tts":
        sub += [s.status("tts"), s.all_micro(), s.all_control("interrupt")]
        pub += [s.all_audio_out(), s.all_control("error"), s.admin("retention"), s.model("tts", "synthesize"),
                *js_read(s.stream("text")), *js_read(s.stream("ctl")), *js_read(s.stream("audio")), *_state(s),
                *own_consumers(s.stream("text"), s.consumer("tts"))]
        responses = {"max": 1}
    elif role == "assistant":
        sub += [s.status("assistant"), s.all_micro(), s.all_partials()]
        pub += [s.all_replies(), s.all_say(), s.all_control("error"), s.admin("retention"),
                s.model("llm", "generate"), s.model_at_any("llm", "generate"), s.model("llm", "cancel"),
                *js_read(s.stream("text")),
                *js_read(s.stream("ctl")), *_state(s), *own_consumers(s.stream("text"), s.consumer("assistant"))]
        responses = {"max": 1}
    elif role == "client":
        sub += [s.all_text(), s.all_tts(), s.all_audio_out(), s.all_control()]
        pub += [s.all_audio_in(), s.all_control("start"), s.all_control("end"), s.all_control("interrupt"),
                s.all_say(), s.model("stt", "transcribe"), s.model("tts", "synthesize"), s.model("llm", "generate"),
                s.model_at_any("llm", "generate"),
                s.model("llm", "cancel"), s.model("admin", "list"), f"$O.{uploads}.>", *js_read(f"OBJ_{uploads}"),
                *(api for family in ("audio", "text", "ctl") for api in js_read(s.stream(family)))]
    perms: dict = {"publish": {"allow": pub}, "subscribe": {"allow": sub}}
    if responses is not None:
        perms["allow_responses"] = responses
    return perms
