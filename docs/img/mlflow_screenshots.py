"""Regenerate docs/img/mlflow_{runs,compare,models}.png from a running MLflow UI, as a newcomer's fresh browser
sees it after a pipeline run: ``mlflow server --backend-store-uri <store> --host 127.0.0.1 --port 5000`` then
``python docs/img/mlflow_screenshots.py http://127.0.0.1:5000 [experiment]`` (headless /usr/bin/chromium,
playwright; nothing typed into the UI's filters)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mlflow import MlflowClient
from playwright.sync_api import sync_playwright

from cim.tracking import UI_WORKFLOW, ui_url

OUT = Path(__file__).resolve().parent
EXPAND = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'
ASSISTANT_CLOSE = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'


def _close_assistant(pg) -> None:
    """The chat panel MLflow opens on the right, out of the way."""
    button = pg.locator(ASSISTANT_CLOSE)
    if button.count() and button.first.is_visible():
        button.first.click()
        pg.wait_for_timeout(500)


def main(server: str, experiment: str = "cim") -> None:
    c = MlflowClient(server)
    exp = c.get_experiment_by_name(experiment).experiment_id
    rows = c.search_runs([exp], "tags.stage = 'compare' and tags.captioner != ''", order_by=["start_time ASC"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1600, "height": 640}, device_scale_factor=1.25)
        pg.goto(ui_url(server, exp))                   # the link the README gives: the runs, nothing filtered
        pg.get_by_text("pipeline[").first.wait_for(timeout=60000)
        _close_assistant(pg)
        for name in ("pipeline[", "compare[world]"):   # unfold the pipeline run, then its comparison
            pg.get_by_role("row").filter(has_text=name).first.locator(EXPAND).first.click()
            pg.wait_for_timeout(1500)
        pg.screenshot(path=str(OUT / "mlflow_runs.png"))
        ids = json.dumps([r.info.run_id for r in rows])
        pg.set_viewport_size({"width": 1600, "height": 900})
        pg.goto(f"{server}/#/compare-runs?runs={ids}&experiments={json.dumps([exp])}&workflowType={UI_WORKFLOW}")
        pg.get_by_text("captioner").first.wait_for(timeout=60000)
        pg.wait_for_timeout(3000)
        _close_assistant(pg)
        pg.screenshot(path=str(OUT / "mlflow_compare.png"))
        pg.goto(f"{server}/#/experiments/{exp}/models?workflowType={UI_WORKFLOW}")
        pg.wait_for_timeout(6000)
        _close_assistant(pg)
        pg.screenshot(path=str(OUT / "mlflow_models.png"))
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
