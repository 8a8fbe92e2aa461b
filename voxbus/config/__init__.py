"""Typed configuration: voxbus.yaml layered over the packaged defaults."""

from voxbus.config.loader import config_to_yaml, decode_config, load_config
from voxbus.config.schema import (
    BatchingConfig, CacheConfig, ClientConfig, Config, EmbeddedServerConfig, ManagerConfig,
    ModelSource, ModelSpec, NatsConfig, StreamLimits, StreamsConfig,
)
from voxbus.config.units import Budget, ByteSize, Duration

__all__ = [
    "BatchingConfig", "Budget", "ByteSize", "CacheConfig", "ClientConfig", "Config", "Duration",
    "EmbeddedServerConfig", "ManagerConfig", "ModelSource", "ModelSpec", "NatsConfig",
    "StreamLimits", "StreamsConfig", "config_to_yaml", "decode_config", "load_config",
]
