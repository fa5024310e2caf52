"""soak's own health (generator.jsonl): when was the load generator itself saturated?

Each load process writes one record per interval: CPU (percent of one core), RSS (MB)
and the gevent loop lag (s) since its previous record. A process over
SATURATED_CPU_PERCENT or SATURATED_LAG_S cannot send or read on time, so latency
spikes and stalls during those spans may be soak's, not the target's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from soak.live import SATURATED_CPU_PERCENT, SATURATED_LAG_S

#: Saturated spans listed in the summary (the earliest).
MAX_SPANS = 20
#: A worker's record interval when it has a single record (s).
_DEFAULT_INTERVAL_S = 10.0


def worker_names(generator: pd.DataFrame) -> pd.Series:
    """Each record's load process: its `worker` id, or "load" for a run with one process."""
    workers = generator["worker"]
    return workers.where(workers.notna(), "load").astype(str)


def saturated(generator: pd.DataFrame) -> np.ndarray:
    """Per generator record: True when that load process was saturated."""
    cpu = generator["cpu_percent"].to_numpy(dtype=float)
    lag = generator["loop_lag_max_s"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return (cpu > SATURATED_CPU_PERCENT) | (lag > SATURATED_LAG_S)


def record_spans(generator: pd.DataFrame) -> np.ndarray:
    """(start, end) elapsed seconds each record covers: since its worker's previous record."""
    if generator.empty:
        return np.empty((0, 2))
    end = generator["elapsed"].to_numpy(dtype=float)
    gaps = generator.groupby(worker_names(generator), sort=False)["elapsed"].diff()
    gaps = gaps.to_numpy(dtype=float)
    typical = np.nanmedian(gaps) if np.isfinite(gaps).any() else _DEFAULT_INTERVAL_S
    gaps = np.where(np.isfinite(gaps), gaps, typical)
    return np.column_stack([end - gaps, end])


def saturated_spans(generator: pd.DataFrame) -> np.ndarray:
    """Merged (start, end) elapsed seconds during which any load process was saturated."""
    spans = record_spans(generator)[saturated(generator)] if not generator.empty else []
    if not len(spans):
        return np.empty((0, 2))
    spans = spans[np.argsort(spans[:, 0])]
    merged = [list(spans[0])]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.array(merged)


def generator_summary(generator: pd.DataFrame, duration_s: float) -> dict[str, Any] | None:
    """summary.json's `generator` object; None when the run has no generator.jsonl."""
    if generator.empty:
        return None
    spans = saturated_spans(generator)
    saturated_s = float(np.sum(spans[:, 1] - spans[:, 0])) if len(spans) else 0.0
    cpu = generator["cpu_percent"].dropna()
    workers = worker_names(generator).unique()
    return {
        "workers": len(workers),
        "worker_names": [str(name) for name in workers[:MAX_SPANS]],
        "samples": len(generator),
        "cpu_percent_p50": float(cpu.median()) if len(cpu) else None,
        "cpu_percent_max": float(cpu.max()) if len(cpu) else None,
        "rss_mb_max": _max(generator["rss_mb"]),
        "loop_lag_max_s": _max(generator["loop_lag_max_s"]),
        "users_max": _max(generator["users"]),
        "saturated_samples": int(saturated(generator).sum()),
        "saturated_s": saturated_s,
        "saturated_percent": 100.0 * saturated_s / duration_s if duration_s > 0 else None,
        "saturated_spans": [[float(a), float(b)] for a, b in spans[:MAX_SPANS]],
        "thresholds": {"cpu_percent": SATURATED_CPU_PERCENT, "loop_lag_s": SATURATED_LAG_S},
    }


def _max(column: pd.Series) -> float | None:
    values = column.dropna()
    return float(values.max()) if len(values) else None
