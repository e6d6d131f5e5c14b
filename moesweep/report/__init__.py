"""The sweep report: tidy info frames (info.py, analysis_info.py) -> Plotly figures (figures*.py) -> one HTML
page (page.py, sections.py, build.py); plus the terminal summary (summary.py).

The report reads only the Parquet tables of ``moesweep.results`` and ``manifest.json``.
"""

from __future__ import annotations

from moesweep.report.build import build_report
from moesweep.report.summary import print_summary, summary_table

__all__ = ["build_report", "print_summary", "summary_table"]
