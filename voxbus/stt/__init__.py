"""The STT service: audio frames in, one transcript per utterance out."""

from voxbus.stt.service import SttService

__all__ = ["SttService"]
