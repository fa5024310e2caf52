"""`python -m soak.target`: run the built-in target without the main CLI.

Example: `python -m soak.target --port 0 --patched --ready-file /tmp/target.json`
"""

import argparse

from soak.errors import UsageError
from soak.target.config import OPTIONS, TargetConfig
from soak.target.server import run


def parse_args(argv: list[str] | None = None) -> TargetConfig:
    """Build a `TargetConfig` from command-line arguments (one flag per config field)."""
    parser = argparse.ArgumentParser(
        prog="python -m soak.target",
        description="Built-in soak target: a chat server (WebSocket, OpenAI-compatible, SSE, "
        "NDJSON) with switchable slow failures.",
        epilog="Example: python -m soak.target --port 0 --patched --ready-file ready.json",
    )
    for option in OPTIONS:
        if option.type is bool:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            default = "" if option.default is None else f" [default: {option.default}]"
            parser.add_argument(
                option.flag, type=option.type, default=option.default, help=option.help + default
            )
    try:
        return TargetConfig(**vars(parser.parse_args(argv)))
    except UsageError as error:
        parser.error(error.message)


if __name__ == "__main__":
    run(parse_args())
