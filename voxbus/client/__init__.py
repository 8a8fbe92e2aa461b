"""Clients of the bus: the model client (typed requests to the ModelManager)."""

from voxbus.client.model_client import ModelClient

__all__ = ["ModelClient"]
