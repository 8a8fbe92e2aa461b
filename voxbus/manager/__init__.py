"""The ModelManager: the one process that loads models and answers inference over NATS."""

from voxbus.manager.service import ModelManager

__all__ = ["ModelManager"]
