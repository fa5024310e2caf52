"""The built-in reference target: a WebSocket chat server with switchable slow failures.

`TargetConfig` holds every setting; `OPTIONS` describes each as a command-line option (name,
flag, type, default, help with units) so a CLI can be generated from it. `run(config)` serves in
the foreground; `start_target(...)` runs it as a subprocess for demos and tests.
"""

from soak.target.process import TargetProcess, start_target
from soak.target.server import OPTIONS, TargetConfig, TargetOption, run, serve

__all__ = [
    "OPTIONS",
    "TargetConfig",
    "TargetOption",
    "TargetProcess",
    "run",
    "serve",
    "start_target",
]
