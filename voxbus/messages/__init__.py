"""Every message voxbus puts on the wire, as msgspec Structs (JSON on the wire).

Schema evolution: add fields with defaults; never change a field's type or meaning; decoders
ignore unknown fields, so older readers keep working with newer writers.
"""

from voxbus.messages.admin import (
    AdminEvent, CacheEvent, GpuStats, LoadedModelStats, ModelEvent, ResourceSnapshot, RetentionWarning,
)
from voxbus.messages.audio import SAMPLE_WIDTH, AudioFormat, AudioFrame, SampleType, SpeechChunk
from voxbus.messages.codec import META_HEADER, decode, decode_meta, encode, meta_headers
from voxbus.messages.control import (
    ControlEvent, Interrupt, SessionEnd, SessionError, SessionStart, SessionTranscribed,
)
from voxbus.messages.model import (
    ChatMessage, ErrorReply, GenerateCancel, GenerateChunk, GenerateDone, GenerateEvent, GenerateRequest,
    GenerateTimings, Histogram, ListModelsReply, ListModelsRequest, LoadModelRequest, ModelInfo, ModelMetrics,
    ModelReply, SamplingOptions, SynthesizeReply, SynthesizeRequest, TranscribeReply,
    TranscribeRequest, UnloadModelRequest, Usage, WorkerInfo,
)
from voxbus.messages.status import ServiceStatus
from voxbus.messages.text import ModelRef, PartialTranscript, ReplyChunk, SayRequest, Segment, Timings, Transcript, Word

__all__ = [
    "AdminEvent", "AudioFormat", "AudioFrame", "CacheEvent", "ChatMessage", "ControlEvent",
    "ErrorReply", "GenerateCancel", "GenerateChunk", "GenerateDone", "GenerateEvent", "GenerateRequest",
    "GenerateTimings", "GpuStats", "Histogram", "Interrupt", "ListModelsReply", "ListModelsRequest",
    "LoadModelRequest", "LoadedModelStats", "META_HEADER", "ModelEvent", "ModelInfo",
    "ModelMetrics", "ModelRef", "ModelReply", "PartialTranscript", "ReplyChunk", "ResourceSnapshot", "RetentionWarning", "SAMPLE_WIDTH",
    "SampleType", "SamplingOptions", "SayRequest", "Segment", "ServiceStatus", "SessionEnd", "SessionError",
    "SessionStart", "SessionTranscribed", "SpeechChunk", "SynthesizeReply", "SynthesizeRequest", "Timings",
    "TranscribeReply", "TranscribeRequest", "Transcript", "UnloadModelRequest", "Usage", "Word", "WorkerInfo", "decode",
    "decode_meta", "encode", "meta_headers",
]
