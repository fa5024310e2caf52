"""soak: soak tests for chat and agent servers that stream replies over WebSockets."""

__version__ = "0.1.0"
