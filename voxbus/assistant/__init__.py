"""The assistant: transcripts in, streamed LLM replies and speech requests out."""

from voxbus.assistant.service import Assistant

__all__ = ["Assistant"]
