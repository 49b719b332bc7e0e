"""End-to-end: the explorer notebook in JupyterLab, driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (free port, random token) over a temporary copy of
``notebooks/explorer.ipynb``, runs all cells in headless Chromium (Debian's, through
playwright), changes the chain seed and presses "random chain", checks that the edited
image changed, and saves ``reports/screenshots/explorer.png``.

Run: ``bash tests/browser/setup_chromium.sh && .venv/bin/python -m pytest -m browser tests/browser``
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explorer.ipynb"
SCREENSHOT = ROOT / "reports" / "screenshots" / "explorer.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 90  # JupyterLab start on a busy 2-core machine
RUN_TIMEOUT_S = 240  # kernel start + icdlib import + first explorer draw
# src of the query image: the 2nd <image> of the first plotly figure (source | query)
QUERY_HREF_JS = """() => {
    const plot = document.querySelector('.jp-OutputArea .js-plotly-plot');
    const imgs = plot ? plot.querySelectorAll('image') : [];
    return imgs.length >= 2 ? imgs[1].getAttribute('href') : null;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(settings: Path) -> None:
    """User settings that keep JupyterLab quiet: no news or update pop-ups."""
    d = settings / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True)
    (d / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


@pytest.fixture
def jupyter(tmp_path):
    """A JupyterLab server over a temp copy of the notebook; yields (base_url, token)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    write_lab_settings(tmp_path / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), OMP_NUM_THREADS="1")
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_server(f"{base}/api/status?token={token}", proc, START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as e:
            tail = (tmp_path / "jupyter.log").read_text()[-2000:]
            raise RuntimeError(f"{e}; server log:\n{tail}") from e
        yield base, token
    finally:
        stop_server(proc, base, token)
        log.close()


def stop_server(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut JupyterLab (and its kernels) down; signal its process group if it hangs."""
    if proc.poll() is not None:
        return
    try:
        req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        proc.wait(timeout=20)
        return
    except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(page, js: str, arg, what: str):
    """Poll ``js(arg)`` until truthy and return its value; on timeout, fail with the outputs."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(js, arg=arg, polling=500).json_value()
    except PlaywrightTimeout:
        texts = page.evaluate("() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                              ".map(e => e.innerText.slice(0, 1500))")
        pytest.fail(f"timed out waiting for {what}; notebook outputs: {texts}")


def test_explorer_notebook_redraws_the_edited_image_when_the_chain_changes(jupyter, chromium):
    from playwright.sync_api import sync_playwright

    base, token = jupyter
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(RUN_TIMEOUT_S * 1000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            # wait for the kernel, then run every cell through JupyterLab's own command
            page.evaluate("""async () => {
                const app = window.jupyterapp;
                const nb = app.shell.currentWidget;
                await nb.sessionContext.ready;
                await app.commands.execute('notebook:run-all-cells');
            }""")
            before = wait_for(page, QUERY_HREF_JS, None, "the explorer's first draw")
            assert before.startswith("data:image/png;base64,")
            figure = page.locator(".jp-OutputArea .js-plotly-plot").first
            figure.scroll_into_view_if_needed()
            shot_before = figure.screenshot()

            seed = page.locator(".widget-text", has_text="chain seed").locator("input")
            seed.fill("5")
            seed.press("Enter")
            page.get_by_role("button", name="random chain").click()
            after = wait_for(
                page, f"(old) => {{ const h = ({QUERY_HREF_JS})(); return h && h !== old ? h : null; }}",
                before, "a new query image after 'random chain'")
            assert after != before
            page.wait_for_timeout(500)  # let plotly paint the new image
            assert figure.screenshot() != shot_before

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            figure.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    print(f"browser test wall time: {time.monotonic() - t0:.1f} s")
