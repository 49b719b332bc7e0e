"""End-to-end: the explorer notebook in JupyterLab, driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (free port, random token) over a temporary copy of
``notebooks/explorer.ipynb``, runs all cells in headless Chromium (Debian's, through
playwright), sets the chain seed to 1 and presses "random chain", checks that the edited
image shown in the browser is exactly what ``edits.apply`` makes (before and after),
and saves ``reports/screenshots/explorer.png``.

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

KERNEL_IDLE_JS = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    const kernel = nb && nb.sessionContext.session && nb.sessionContext.session.kernel;
    return kernel && kernel.status === 'idle';
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


def expected_query_uri(chain_seed: int) -> str:
    """The PNG the explorer must show as its query for the notebook's source (seed 0)
    edited by the chain of ``chain_seed``, computed here without any widget."""
    from icdlib import edits
    from icdlib.viz import figures as figures
    from icdlib.data import render
    from icdlib.viz.explorer import VizConfig

    cfg = VizConfig()
    source = render(cfg.source_kind, 0, cfg.size)
    query, _ = edits.apply(source, edits.sample_chain(chain_seed, edits.FAMILIES))
    return figures.png_data_uri(query)


def wait_until_idle(page, settle_s: float = 1.5, timeout_s: float = RUN_TIMEOUT_S) -> None:
    """Wait until the kernel has stayed idle for ``settle_s`` (redraws come in bursts)."""
    t0 = time.monotonic()
    idle_since = None
    while time.monotonic() - t0 < timeout_s:
        if page.evaluate(KERNEL_IDLE_JS):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return
        else:
            idle_since = None
        page.wait_for_timeout(250)
    pytest.fail(f"the kernel did not settle to idle within {timeout_s} s")


def test_explorer_notebook_redraws_the_edited_image_when_the_chain_changes(jupyter, chromium):
    from playwright.sync_api import sync_playwright

    base, token = jupyter
    want_before, want_after = expected_query_uri(0), expected_query_uri(1)
    assert want_before != want_after
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
            # the browser shows exactly the image edits.apply makes for chain seed 0
            wait_for(page, f"(want) => ({QUERY_HREF_JS})() === want", want_before,
                     "the explorer's first draw (chain seed 0)")
            wait_until_idle(page)
            figure = page.locator(".jp-OutputArea .js-plotly-plot").first
            figure.scroll_into_view_if_needed()
            shot_before = figure.screenshot()

            seed = page.locator(".widget-text", has_text="chain seed").locator("input")
            seed.fill("1")
            seed.press("Enter")
            page.get_by_role("button", name="random chain").click()
            wait_for(page, f"(want) => ({QUERY_HREF_JS})() === want", want_after,
                     "the query image of chain seed 1 after 'random chain'")
            wait_until_idle(page)
            page.wait_for_timeout(1000)  # let plotly paint the last updates
            assert figure.screenshot() != shot_before  # the pixels on screen changed too

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            figure.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    print(f"browser test wall time: {time.monotonic() - t0:.1f} s")
