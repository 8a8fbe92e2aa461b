"""How voxbus writes session times for people: the clock of `transcribe`, `listen` and `replay`
lines, and subtitle (SRT and WebVTT) timestamps."""

from __future__ import annotations


def clock(t: float) -> str:
    """mm:ss.ss"""
    return f"{int(t // 60):02d}:{t % 60:05.2f}"


def srt_time(t: float) -> str:
    """hh:mm:ss,mmm"""
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def vtt_time(t: float) -> str:
    """hh:mm:ss.mmm"""
    return srt_time(t).replace(",", ".")
