"""The built-in target's settings: `TargetConfig` and its command-line `OPTIONS`."""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from soak.errors import UsageError

# Fault fields left at None take the value of the build: faulty (the default) or patched.
FAULTY_DEFAULTS: dict[str, int] = {
    "leak_thread_every": 10,
    "stall_every": 40,
    "block_loop_every": 150,
    "orphan_ticker_every": 1,
    "stale_reply_every": 50,
    "history_limit": 0,
}
PATCHED_DEFAULTS: dict[str, int] = {
    "leak_thread_every": 0,
    "stall_every": 0,
    "block_loop_every": 0,
    "orphan_ticker_every": 0,
    "stale_reply_every": 0,
    "history_limit": 100,
}


def _fault(name: str, help_text: str) -> Any:
    """A fault field: None until `TargetConfig` resolves it from the build's defaults."""
    builds = f" Default {FAULTY_DEFAULTS[name]}, patched {PATCHED_DEFAULTS[name]}."
    return field(default=None, metadata={"help": help_text + builds})


@dataclass
class TargetConfig:
    """Everything the target needs. Fault fields left at None take the build's default.

    Precedence: `patched` picks the defaults (all faults off, history bounded), and any fault
    field given explicitly wins over it, so `patched=True, stall_every=5` is the patched build
    with stalls only. `build` is "patched" only if no fault is active after that.
    """

    host: str = field(
        default="127.0.0.1", metadata={"help": "Interface to bind (loopback by default)."}
    )
    port: int = field(default=8765, metadata={"help": "TCP port; 0 picks a free one."})
    tokens: int = field(
        default=20, metadata={"help": "Words per reply (a longer prompt gives a longer reply)."}
    )
    token_interval: float = field(
        default=0.02, metadata={"help": "Seconds between two token frames."}
    )
    patched: bool = field(
        default=False,
        metadata={
            "help": "Patched build: every fault off, history bounded (explicit fault "
            "options still apply)."
        },
    )
    leak_thread_every: int | None = _fault(
        "leak_thread_every",
        "Every Nth reply runs work on a new ThreadPoolExecutor that is never shut down, "
        "leaking one thread (0 = off).",
    )
    stall_every: int | None = _fault(
        "stall_every",
        "Every Nth reply dies silently halfway through its tokens and never sends done (0 = off).",
    )
    block_loop_every: int | None = _fault(
        "block_loop_every",
        "Every Nth reply runs pure-Python CPU work on the event loop for block_loop_seconds "
        "(0 = off).",
    )
    block_loop_seconds: float = field(
        default=1.5, metadata={"help": "Seconds each event-loop block lasts."}
    )
    orphan_ticker_every: int | None = _fault(
        "orphan_ticker_every",
        "Every Nth stream leaves its coalescing ticker task running after the stream ends, "
        "so idle CPU climbs (0 = off).",
    )
    ticker_interval: float = field(
        default=0.05, metadata={"help": "Seconds between two wake-ups of a stream's ticker."}
    )
    max_orphans: int = field(
        default=3000, metadata={"help": "Cap on orphaned tickers (bounds idle CPU)."}
    )
    stale_reply_every: int | None = _fault(
        "stale_reply_every",
        "Every Nth prompt is answered as if it were the chat's previous prompt (its connection's, "
        "on HTTP): a reply for the previous question (0 = off).",
    )
    history_bytes_per_reply: int = field(
        default=20000, metadata={"help": "Bytes each reply appends to the global history."}
    )
    history_limit: int | None = _fault(
        "history_limit", "Replies kept in the global history (0 = unbounded: the memory leak)."
    )
    ready_file: str | None = field(
        default=None,
        metadata={
            "help": "Once listening, write JSON {pid, host, port, ws_url, http_url, "
            "health_url, build} to this file (atomically)."
        },
    )

    def __post_init__(self) -> None:
        defaults = PATCHED_DEFAULTS if self.patched else FAULTY_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) in (int, float) and value < 0:
                flag = "--" + f.name.replace("_", "-")
                raise UsageError(f"{flag} must be 0 or more, got {value}.")

    @property
    def build(self) -> str:
        """The build label: "patched" if no fault is active, else "faults"."""
        rates = (
            self.leak_thread_every,
            self.stall_every,
            self.block_loop_every,
            self.orphan_ticker_every,
            self.stale_reply_every,
        )
        if any(rates) or self.history_limit == 0:
            return "faults"
        return "patched"


@dataclass(frozen=True)
class TargetOption:
    """One command-line option of the target, generated from a `TargetConfig` field."""

    name: str
    flag: str
    type: type
    default: Any
    help: str


def _options() -> tuple[TargetOption, ...]:
    hints = typing.get_type_hints(TargetConfig)
    options = []
    for f in dataclasses.fields(TargetConfig):
        kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
        kind = kinds[0] if kinds else hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        options.append(TargetOption(f.name, flag, kind, f.default, f.metadata["help"]))
    return tuple(options)


OPTIONS = _options()
"""Every `TargetConfig` field as an option (`default` None = the build's default)."""
