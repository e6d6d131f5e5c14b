"""``build_report``: results directory -> one self-contained HTML page (and, on request, PNG figures)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from moesweep.report.info import load_results
from moesweep.report.page import Fig, render_page
from moesweep.report.sections import all_sections

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """A Chrome/Chromium kaleido can drive: $BROWSER_PATH, else the first one on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    return next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)


def export_png(figs: list[Fig], out_dir: Path, say: Callable[[str], None]) -> list[Path]:
    """Write each figure as ``out_dir/NAME.png`` through kaleido; when kaleido or a browser is missing,
    or the export fails, say so in one actionable line and return what was written (never raises)."""
    try:
        import plotly.io as pio
        import kaleido  # noqa: F401  (plotly imports it lazily; check here to name the fix)
    except ImportError:
        say("PNG export skipped: kaleido is not installed; run `pip install kaleido` (or the png extra).")
        return []
    if find_browser() is None:
        say("PNG export skipped: kaleido needs Chrome or Chromium; install one (`apt-get install chromium`) "
            "or set BROWSER_PATH to its executable.")
        return []
    if not figs:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{f.name}.png" for f in figs]
    try:
        pio.write_images([f.figure for f in figs], paths, width=1200, scale=1)
    except Exception as e:  # noqa: BLE001 - any kaleido/browser failure becomes one line, not a traceback
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        say(f"PNG export failed ({type(e).__name__}: {msg[:200]}); the HTML report is complete. "
            "Check `pip install -U kaleido` and that Chromium starts (`chromium --headless --version`).")
        return [p for p in paths if p.exists()]
    return paths


def build_report(results_dir: str | Path, out: str | Path | None = None, png: bool = False) -> Path:
    """Write the HTML report for ``results_dir`` (default ``RESULTS_DIR/report.html``) and return its path.

    With ``png`` also writes every figure to ``<report stem>_figures/NAME.png`` beside it."""
    R = load_results(results_dir)
    sections = all_sections(R)
    name = R.manifest.get("name") or R.dir.resolve().name
    sub = "MoE classifier heads: accuracy over seeds, hyperparameters, routing, sharpness, loss surface, latency"
    out_path = Path(out) if out is not None else R.dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(render_page(f"moesweep report: {name}", sub, sections), encoding="utf-8")
    os.replace(tmp, out_path)  # atomic, like every other artefact of a run
    if png:
        figs = [f for s in sections for f in s.figures()]
        export_png(figs, out_path.with_name(f"{out_path.stem}_figures"), lambda m: print(m, file=sys.stderr))
    return out_path
