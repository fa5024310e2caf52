"""Child interpreters that run this very soak, whatever the working directory.

`python -m soak.load` puts the working directory first on sys.path, so a folder named
`soak/` there (a checkout, a project's own package) would be imported instead of the
soak that started the run. Children run with `-P` (no such entry) and find soak where
the parent found it, through PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The folder that holds the soak package this process imported.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def module_argv(module: str, *args: str) -> list[str]:
    """argv of `python -m MODULE ARGS` in a child that imports this soak."""
    return [sys.executable, "-P", "-m", module, *args]


def module_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment (default: this one) with this soak first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env
