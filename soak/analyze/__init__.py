"""Analysis of a run directory: load it, fit trends, summarise it (never imports locust)."""

from soak.analyze.load import RunData, TargetData, load_run
from soak.analyze.summary import Analysis, TargetAnalysis, analyze_run, summarize
from soak.analyze.trend import Fit, Segment, Trend, find_segments, fit_trend, theil_sen
from soak.model import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "Analysis",
    "Fit",
    "RunData",
    "Segment",
    "TargetAnalysis",
    "TargetData",
    "Trend",
    "analyze_run",
    "find_segments",
    "fit_trend",
    "load_run",
    "summarize",
    "theil_sen",
]
