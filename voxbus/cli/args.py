"""Argument types shared by several commands."""

from __future__ import annotations

import argparse

from voxbus.subjects import InvalidSessionId, validate_session_id


def session_id(text: str) -> str:
    """A session (or conversation) id: a bad one is a usage error (exit 2) naming what is wrong."""
    try:
        return validate_session_id(text)
    except InvalidSessionId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
