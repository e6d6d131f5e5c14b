"""The sweep report: tidy info frames (info.py, analysis_info.py) -> Plotly figures (figures*.py) -> one HTML
page (page.py, sections.py, build.py); plus the terminal summary (summary.py).

The report reads only the Parquet tables of ``moesweep.results`` and ``manifest.json``. Names are loaded
on first use so ``moesweep summary`` does not pay for importing Plotly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "print_summary", "summary_table"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from moesweep.report.build import build_report

        return build_report
    if name in ("print_summary", "summary_table"):
        from moesweep.report import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'moesweep.report' has no attribute {name!r}")
