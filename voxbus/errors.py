"""One exception tree for voxbus, and the wire error codes it maps to.

    VoxbusError
    ├── ConfigError             a configuration file, override or model entry is invalid
    ├── ServerError             the embedded nats-server cannot start (binary missing, port taken),
    │   │                       or the bus cannot store what a publisher sends
    │   ├── FramesNotStored     frames the bus did not store within ingest.retry_window (counted)
    │   └── StreamFull          a stream that refuses new messages at its max_bytes (a tenant's quota)
    ├── PermissionDenied        the server refused a publish or subscription (auth on): names the subject
    ├── ProtocolError           a message on the wire does not decode
    ├── InvalidName             a session id or subject token that would change NATS routing
    │   ├── InvalidSessionId
    │   └── InvalidSubjectToken
    ├── AudioFileError          an audio file given to a command cannot be read
    ├── BackendError            a model library refused a model or an input (inside a worker;
    │   │                       it reaches callers as the wire error below that fits)
    │   ├── UnsupportedQuantization
    │   └── ContextTooLong
    └── ModelError              what a request to the ModelManager ended in (code, message, transient)
        ├── an error reply, sent by a manager:
        │   ├── BadRequest            400  malformed request or invalid options
        │   │   ├── InvalidAudio      400  empty, odd-sized, non-finite or out-of-range audio
        │   │   ├── ContextLengthExceeded 400  a prompt longer than the model's context
        │   │   └── UnsupportedFormat 415  a sample format / rate / channel count we do not take
        │   ├── UnknownModel          404  no such model id, or no default for that task
        │   ├── VersionMismatch       409  the request pinned a version the model does not have
        │   ├── ModelBusy             409  the model is serving requests and cannot be unloaded now (transient)
        │   ├── PayloadTooLarge       413  over manager.max_request_bytes, or over the server's max_payload
        │   ├── WrongKind             422  the model exists but does another task
        │   ├── ModelRefused          507  the model cannot fit the memory budget even after eviction
        │   ├── ModelFailed           500  loading or inference raised inside the backend (or quarantined)
        │   ├── ModelCrashed          502  the model's worker process died or hung mid-request (transient)
        │   ├── Cancelled             499  the caller or an interrupt stopped the work
        │   ├── Overloaded            503  the model's queue is full (transient; carries retry_after)
        │   └── ShuttingDown          503  the manager stopped before the request started (transient)
        └── NoAnswer              no error reply came (raised by the client)
            ├── Unavailable       503  no manager took the request, or it stopped answering (transient)
            └── Timeout           504  no answer within the deadline (transient before acceptance)

``transient`` says whether repeating the same request later may succeed: clients retry those
with backoff; permanent ones are raised at once. A manager also answers ``timeout`` for work
whose deadline passed before it started.
"""

from __future__ import annotations


class VoxbusError(Exception):
    """Root of every error voxbus raises on purpose."""


class ConfigError(VoxbusError):
    pass


class ServerError(VoxbusError):
    pass


class FramesNotStored(ServerError):
    """Raised after a session's end event went out: `lost` frame numbers of `sent` were never stored."""

    def __init__(self, message: str, *, lost: list[int], sent: int) -> None:
        super().__init__(message)
        self.lost, self.sent = lost, sent


class PermissionDenied(VoxbusError):
    """A server with auth on refused what this connection's credentials may not do."""

    def __init__(self, subject: str, what: str = "publish") -> None:
        verb = "publish to" if what == "publish" else "subscribe to"
        super().__init__(f"permission denied: these credentials may not {verb} {subject}")
        self.subject, self.what = subject, what


class StreamFull(ServerError):
    """A stream at its max_bytes that discards new messages (a tenant's storage quota) refused one."""


class ProtocolError(VoxbusError):
    pass


class AudioFileError(VoxbusError):
    """An audio file given to a command cannot be read or decoded."""


class NoMicrophone(VoxbusError):
    """No audio input could be opened: no PortAudio library, no input device, or it refused."""


class InvalidName(VoxbusError, ValueError):
    """A name that cannot be a NATS subject token."""


class InvalidSessionId(InvalidName):
    """A session id that would change NATS routing or is otherwise unusable."""


class InvalidSubjectToken(InvalidName):
    """A prefix, event or verb that is not a single plain subject token."""


class BackendError(VoxbusError):
    """A backend could not do what was asked (bad model file, unsupported option, bad input)."""


class UnsupportedQuantization(BackendError):
    """The backend cannot apply the requested quantization."""


class ContextTooLong(BackendError):
    """The prompt does not fit the model's context window."""


class ModelError(VoxbusError):
    code = "model_error"
    status = 500
    transient = False

    def __init__(self, message: str, *, code: str | None = None, transient: bool | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient
        self.retry_after = retry_after
        """Seconds the caller should wait before trying again, when the manager knows."""

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class BadRequest(ModelError):
    code, status = "bad_request", 400


class InvalidAudio(BadRequest):
    code, status = "invalid_audio", 400


class ContextLengthExceeded(BadRequest):
    code, status = "context_length_exceeded", 400


class UnsupportedFormat(BadRequest):
    code, status = "unsupported_format", 415


class UnknownModel(ModelError):
    code, status = "unknown_model", 404


class VersionMismatch(ModelError):
    code, status = "version_mismatch", 409


class ModelBusy(ModelError):
    code, status, transient = "model_busy", 409, True


class PayloadTooLarge(ModelError):
    code, status = "payload_too_large", 413


class WrongKind(ModelError):
    code, status = "wrong_kind", 422


class ModelRefused(ModelError):
    code, status = "model_refused", 507


class ModelFailed(ModelError):
    code, status = "model_failed", 500


class ModelCrashed(ModelError):
    """The worker process running the request died (a signal, an exit) or hung past the watchdog.
    Transient: a fresh worker serves the retry; a model that keeps crashing is quarantined."""

    code, status, transient = "model_crashed", 502, True


class Cancelled(ModelError):
    code, status = "cancelled", 499


class ShuttingDown(ModelError):
    code, status, transient = "shutting_down", 503, True


class NoAnswer(ModelError):
    """No error reply came: nobody took the request, the manager went silent, or time ran out."""

    transient = True


class Unavailable(NoAnswer):
    code, status, transient = "unavailable", 503, True


class Overloaded(ModelError):
    """The model's queue is at its limit; refused at once instead of waiting without end."""

    code, status, transient = "overloaded", 503, True


class Timeout(NoAnswer):
    code, status, transient = "timeout", 504, True


ERROR_CLASSES: dict[str, type[ModelError]] = {
    cls.code: cls
    for cls in (
        ModelError, BadRequest, InvalidAudio, ContextLengthExceeded, UnsupportedFormat, UnknownModel,
        VersionMismatch, ModelBusy, PayloadTooLarge, WrongKind, ModelRefused, ModelFailed, ModelCrashed, Cancelled,
        Overloaded, ShuttingDown, Unavailable, Timeout,
    )
}


def error_from_wire(code: str, message: str, transient: bool | None = None,
                    retry_after: float | None = None) -> ModelError:
    """Rebuild the typed exception for a wire error; unknown codes become plain ModelError."""
    cls = ERROR_CLASSES.get(code, ModelError)
    return cls(message, code=code, transient=transient, retry_after=retry_after)
