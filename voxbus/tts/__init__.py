"""The TTS service: text in, a session's synthesized audio out."""

from voxbus.tts.service import TtsService

__all__ = ["TtsService"]
