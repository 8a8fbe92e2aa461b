"""voxbus: a local voice-AI pipeline on NATS JetStream."""

__version__ = "0.1.0"
