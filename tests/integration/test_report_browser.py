"""The HTML report opened from file:// in headless Chromium (Playwright driving the system browser).

Checks what a reader would notice: no console errors, every section there, every figure drawn with
data, no network request (the page must work offline), and the "not run" notes when analyses are
missing. Chromium comes from apt (.ci/install_chromium.sh); `playwright install` is never needed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from moesweep.report import build_report
from moesweep.report.build import export_png
from moesweep.report.page import Fig
from tests.fixtures.make_results import make_results

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("MOESWEEP_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               # Parallel coordinates draw with WebGL; without a GPU Chromium needs its software renderer.
               "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
SECTIONS = ["overview", "accuracy", "hyperparameters", "learning-curves", "utilization", "sharpness", "landscape",
            "latency", "findings"]

# Every Plotly div: has traces, at least one trace carries data, and something was drawn (svg traces,
# heatmap images or a WebGL canvas) inside a plot area of real size.
PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  // gd._fullData: traces after plotly.js decoded the (binary-encoded) arrays; _length = points drawn.
  const hasData = (gd._fullData || []).some((t, i) => t._length > 0
      || (t.type === 'heatmap' && gd.calcdata[i] && gd.calcdata[i][0].z && gd.calcdata[i][0].z.length > 0));
  const drawn = gd.querySelectorAll('g.trace, g.hm image, .heatmaplayer image, canvas').length;
  const box = gd.getBoundingClientRect();
  return {id: gd.id, traces: (gd.data || []).length, hasData, drawn, width: box.width, height: box.height,
          svg: !!gd.querySelector('svg.main-svg')};
})"""


def _require_browser():
    """Skip locally (with the reason) but fail in CI when the browser stack is missing."""
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "playwright is not installed (pip install playwright; the browser itself comes from apt)"
    if why is None and not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} not found: run .ci/install_chromium.sh"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


def open_report(browser, path: Path):
    """Load the page; return (page, console errors, requests that left file://)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, remote = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):  # the report must not need the network: record and refuse anything remote
        if r.request.url.startswith(("file:", "data:", "blob:")):
            return r.continue_()
        remote.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    # Generous timeouts: the page parses ~5 MB of inline script, slow on a busy 2-core CI machine.
    page.goto(path.resolve().as_uri(), wait_until="load", timeout=180_000)
    # Plotly draws asynchronously after load; wait until every figure has its plot area.
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                                .every(gd => gd._fullLayout && gd.querySelector('svg.main-svg'))""", timeout=120_000)
    return page, errors, remote


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("MOESWEEP_SCREENSHOT") and name == "report.png":
        dest = Path(os.environ["MOESWEEP_SCREENSHOT"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)
    return shot


def test_full_report_renders_every_figure(browser, tmp_path):
    results = make_results(tmp_path / "run")
    report = build_report(results)
    html = report.read_text()
    # plotly.js inline exactly once, nothing loaded by URL (the bundle's own topojson default URL is
    # for geo maps, which the report does not draw; the network check below would catch its use).
    assert html.count("plotly.js v") == 1
    assert "<script src=" not in html and 'src="http' not in html

    page, errors, remote = open_report(browser, report)
    assert errors == []
    assert remote == []
    for sid in SECTIONS:
        assert page.locator(f"section#{sid} h2").count() == 1, sid
        assert page.locator(f"nav#toc a[href='#{sid}']").count() == 1, sid
    plots = page.evaluate(PLOTS_JS)
    # One drawn Plotly div per <figure>; 16 figures for the full fixture (see moesweep/report/sections.py).
    assert len(plots) == html.count('<figure class="plot"') == 16
    for p in plots:
        assert p["svg"] and p["traces"] > 0 and p["hasData"] and p["drawn"] > 0, p
        assert p["width"] > 300 and p["height"] > 150, p
    # The full report has no "not run" notes; the data's own markup is shown as text, not run.
    assert page.locator(".note-missing").count() == 0
    assert "<script>" in page.locator("section#overview pre").first.inner_text()
    findings = page.locator("section#findings li").all_inner_texts()
    assert any("SparseMoE test accuracy" in f and "not significant" in f for f in findings), findings
    shot = _screenshot(page, tmp_path, "report.png")
    assert shot.stat().st_size > 50_000
    page.close()


def test_report_without_analysis_says_not_run(browser, tmp_path):
    results = make_results(tmp_path / "run", with_analysis=False, seeds=1)
    page, errors, remote = open_report(browser, build_report(results))
    assert errors == [] and remote == []
    for sid in SECTIONS:
        assert page.locator(f"section#{sid}").count() == 1, sid
    for sid in ("sharpness", "landscape", "latency"):
        text = page.locator(f"section#{sid} .note-missing").inner_text()
        assert "not run" in text, (sid, text)
    # One seed per configuration: intervals are n/a and the comparison is not testable.
    acc = page.locator("section#accuracy").inner_text()
    assert "CI n/a" in acc and "not testable" in acc
    for p in page.evaluate(PLOTS_JS):
        assert p["hasData"] and p["drawn"] > 0, p
    _screenshot(page, tmp_path, "report_no_analysis.png")
    page.close()


def test_png_export_through_kaleido(tmp_path):
    """--png with kaleido and a browser present writes a real PNG per figure."""
    _require_browser()
    pytest.importorskip("kaleido", reason="pip install kaleido")
    import plotly.graph_objects as go

    messages: list[str] = []
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))
    os.environ.setdefault("BROWSER_PATH", CHROMIUM)
    paths = export_png([Fig("probe", fig)], tmp_path, messages.append)
    assert messages == []
    assert paths == [tmp_path / "probe.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
