"""Numeric /health fields: levels, percentiles and trends, for criteria like
`health.diagnostics.thread_count.max < 200` and for the report's /health table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from soak.analyze.load import BODY_PREFIX
from soak.analyze.trend import fit_trend

#: /health fields summarised per target (the ones criteria name come first).
MAX_FIELDS = 200
#: Points a /health field trend is reduced to (there may be hundreds of fields).
_FIT_POINTS = 400


def field_names(health: pd.DataFrame) -> list[str]:
    """Dotted paths of the numeric /health fields recorded, in body order."""
    return [c[len(BODY_PREFIX) :] for c in health.columns if c.startswith(BODY_PREFIX)]


def health_fields(
    health: pd.DataFrame,
    warmup_s: float,
    window: tuple[float, float] | None,
    busy_until: float | None,
    wanted: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """{path: {samples, last, min, max, mean, p50, p95, p99, growth_per_hour,
    growth_ci_per_hour, trend}} for up to MAX_FIELDS numeric fields.

    Levels and percentiles use the samples after the warm-up (all of them if none is);
    `last` is the last sample; the trend is fitted over `window` (elapsed s: the headline
    process segment after its warm-up), None without one.
    """
    names = field_names(health)
    first = list(dict.fromkeys(n for n in wanted if n in names))
    names = (first + [n for n in names if n not in first])[:MAX_FIELDS]
    if not names:
        return {}
    columns = [BODY_PREFIX + n for n in names]
    after = health.loc[health["elapsed"] >= warmup_s, columns]
    if after.dropna(how="all").empty:
        after = health[columns]
    quantiles = after.quantile([0.5, 0.95, 0.99])
    counts, lows, highs, means = after.count(), after.min(), after.max(), after.mean()
    elapsed = health["elapsed"].to_numpy(dtype=float)
    in_window = (
        (elapsed >= window[0]) & (elapsed <= window[1])
        if window is not None
        else np.zeros(len(health), dtype=bool)
    )
    fields = {}
    for name, column in zip(names, columns, strict=True):
        values = health[column].dropna()
        entry: dict[str, Any] = {
            "samples": int(counts[column]),
            "last": float(values.iloc[-1]) if len(values) else None,
            "min": lows[column],
            "max": highs[column],
            "mean": means[column],
            "p50": quantiles.at[0.5, column],
            "p95": quantiles.at[0.95, column],
            "p99": quantiles.at[0.99, column],
            "growth_per_hour": None,
            "growth_ci_per_hour": None,
            "trend": None,
        }
        y = health.loc[in_window, column].to_numpy(dtype=float)
        finite = np.isfinite(y)
        if finite.sum() >= 3:
            x = elapsed[in_window]
            steady = np.nanmin(y) == np.nanmax(y)
            trend = None if steady else fit_trend(x, y, busy_until, _FIT_POINTS)
            entry["trend"] = "flat" if steady else (trend.shape if trend else None)
            entry["growth_per_hour"] = 0.0 if steady else (trend.fit.per_hour if trend else None)
            if trend is not None:
                entry["growth_ci_per_hour"] = list(trend.fit.ci_per_hour)
            elif steady:
                entry["growth_ci_per_hour"] = [0.0, 0.0]
        fields[name] = entry
    return fields
