"""Reports built from stored measurements: the regression gate that compares two runs."""

from __future__ import annotations

from optiserve.report.compare import (
    METRICS,
    Comparison,
    Row,
    Verdict,
    compare,
    headline,
    to_dict,
    to_markdown,
    to_rows,
)

__all__ = ["METRICS", "Comparison", "Row", "Verdict", "compare", "headline", "to_dict", "to_markdown", "to_rows"]
