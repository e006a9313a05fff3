"""`dvc plots show` renders offline: its page (.dvc/offline.html) inlines Vega instead of loading it from a CDN."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cim.plots_page import PAGE, page

ROOT = Path(__file__).resolve().parents[1]


def test_committed_page_is_the_generated_one():
    assert (ROOT / PAGE).read_text(encoding="utf-8") == page(), "run `make plots-page` and commit .dvc/offline.html"


def test_config_names_the_page():
    assert "html_template = offline.html" in (ROOT / ".dvc/config").read_text()


@pytest.mark.slow
def test_plots_render_offline_in_chromium(tmp_path):
    from support.browser import page as browser_page

    if shutil.which("dvc") is None:
        pytest.skip("dvc is not on PATH")
    repo = tmp_path / "repo"
    (repo / ".dvc/plots").mkdir(parents=True)
    for f in (".dvc/config", str(PAGE), ".dvc/plots/bar_ci.json"):
        shutil.copy(ROOT / f, repo / f)
    rows = [{"captioner": c, "metric": m, "value": v, "low": v - 2, "high": v + 2}
            for m in ("CAPTURE", "CIM") for c, v in (("sft", 52.0), ("cim", 65.8))]
    (repo / "plot.json").write_text(json.dumps(rows))
    (repo / "curve.csv").write_text("step,reward\n" + "".join(f"{i},{1 + i / 10}\n" for i in range(20)))
    (repo / "dvc.yaml").write_text(
        "plots:\n  - plot.json:\n      x: value\n      y: captioner\n      template: bar_ci\n"
        "  - curve.csv:\n      x: step\n      y: reward\n      template: linear\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "plots", "show", "-o", "out"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    html = (repo / "out/index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html
    with browser_page() as pg:
        pg.goto((repo / "out/index.html").as_uri())
        pg.wait_for_selector("div#plot_json svg .mark-rect path, div#plot_json svg .mark-rect", timeout=20000)
        drawn = pg.evaluate("""() => Object.fromEntries([...document.querySelectorAll('body > div[id]')].map(d =>
            [d.id, d.querySelectorAll('svg .mark-rect path, svg .mark-line path, svg .mark-rule line').length]))""")
        assert pg.errors == [] and pg.refused == []
    assert drawn["plot_json"] >= 4 and drawn["curve_csv"] >= 1, drawn
