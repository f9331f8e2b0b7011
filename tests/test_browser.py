"""In a real browser (Debian's Chromium, installed by .ci/chromium, driven by Playwright): run the experiment
notebook through JupyterLab's menu, and read a parameter comment on a generated API page."""

import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import NOTEBOOK, ROOT
from test_lab import start_lab

from mlkit.core import free_port

CHROMIUM = os.environ.get("MLKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = ROOT / "reports" / "browser"


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: run `bash .ci/chromium` (make pytest does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_run_the_experiment_notebook_in_jupyterlab(tmp_path, browser):
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    # no autosave: running the notebook must never write it
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    start = time.monotonic()
    tracker = settings.parent / "notebook-extension"
    tracker.mkdir()  # render every cell, also those scrolled out of view, so their outputs can be read
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    proc, url, ready_s = start_lab(
        tmp_path, free_port(), {"JUPYTERLAB_SETTINGS_DIR": str(settings.parent.parent)}
    )
    try:
        base, token = url.split("lab?token=")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}lab/tree/nbs/experiments/train_tabular.ipynb?token={token}")
        page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
        kernel = page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName").first
        kernel.wait_for(timeout=60_000)
        page.wait_for_function(
            "() => document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName')"
            "?.textContent.includes('Python (mlkit)')",
            timeout=60_000,
        )
        page.locator(".jp-StatusBar-TextItem", has_text="Python (mlkit) | Idle").wait_for(timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        holdout = page.locator(".jp-OutputArea-output", has_text="baseline_accuracy")
        try:
            holdout.wait_for(timeout=240_000)
        except Exception:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "lab-failed.png"), full_page=True)
            errors = page.locator("[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()
            raise AssertionError(f"no metrics output; cell errors: {errors[-1:] or 'none'}") from None
        text = holdout.inner_text()
        assert "holdout" in text and "roc_auc" in text
        roc_auc = float(re.search(r"roc_auc\s+([0-9.]+)", text).group(1))
        assert roc_auc > 0.9, text
        assert page.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0, "no cell raised"
        assert page.get_by_text("official Jupyter news").count() == 0, "mlkit lab answers the news prompt"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "lab.png"))
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        code = proc.wait(timeout=60)
    print(
        f"lab ready in {ready_s:.1f} s; notebook run in the browser and lab stopped: {time.monotonic() - start:.1f} s"
    )
    assert code == 0 and "JupyterLab stopped (exit code 0)." in rest
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before, (
        "running by hand left the notebook unchanged"
    )


def test_generated_api_page_shows_a_parameter_comment(tmp_path, browser):
    from mlkit.docs import build_docs

    index = build_docs(out=tmp_path / "site")
    page = browser.new_page()
    page.goto(index.as_uri())
    page.locator("a[href='api/lab.html']").click()
    page.wait_for_url("**/api/lab.html")
    section = page.locator("section#start_lab")
    assert "start_lab(root: pathlib.Path | str | None = None" in section.locator("pre.signature").inner_text()
    row = section.locator("table.params tr", has=page.locator("code", has_text=re.compile(r"^port$")))
    assert row.locator("td").all_inner_texts() == [
        "port",
        "int | None",
        "None",
        "TCP port (default: a free one)",
    ]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "docs.png"), full_page=False)
