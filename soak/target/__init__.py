"""The built-in reference target: a chat server with switchable slow failures.

One port speaks WebSocket chat (`/ws`), OpenAI-compatible chat completions, Trinity-style
SSE and agentex-style NDJSON over HTTP, and serves `/health`.

`TargetConfig` holds every setting; `OPTIONS` describes each as a command-line option (name,
flag, type, default, help with units) so a CLI can be generated from it. `run(config)` serves in
the foreground; `start_target(...)` runs it as a subprocess for demos and tests.
"""

from soak.target.config import OPTIONS, TargetConfig, TargetOption
from soak.target.process import TargetProcess, start_target
from soak.target.server import run, serve

__all__ = [
    "OPTIONS",
    "TargetConfig",
    "TargetOption",
    "TargetProcess",
    "run",
    "serve",
    "start_target",
]
