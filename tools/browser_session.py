"""JupyterLab driven by headless Chromium: what the browser tests and ``tools/screenshots.py`` share.

:func:`jupyter_lab` starts JupyterLab on 127.0.0.1 (a free port, a random token, quiet user
settings) over a scratch folder holding one notebook, and shuts it and its kernels down after;
``kernel_dir`` lets the kernel start elsewhere (a pipeline run's root, so that the paths the
notebook names are relative to it). :func:`chromium_page` opens a page in Debian's chromium
through playwright (``executable_path``: playwright's own browser download is never used),
:func:`run_notebook` runs every cell through JupyterLab's own command, :func:`wait_until_idle`
waits for the kernel to settle and :func:`kernel_execute` runs code in the notebook's kernel
without a cell (widget state changes reach the page through the widgets' comms).

Needs ``bash tests/browser/setup_chromium.sh`` (chromium and the playwright package);
:func:`missing_requirement` says what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]  # the repository: the kernel imports its icdlib
CHROMIUM = os.environ.get("ICDLIB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 90  # JupyterLab start on a busy 2-core machine
RUN_TIMEOUT_S = 240  # kernel start + icdlib import + first explorer draw

KERNEL_IDLE_JS = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    const kernel = nb && nb.sessionContext.session && nb.sessionContext.session.kernel;
    return kernel && kernel.status === 'idle';
}"""
RUN_ALL_JS = """async () => {
    const app = window.jupyterapp;
    const nb = app.shell.currentWidget;
    await nb.sessionContext.ready;
    await app.commands.execute('notebook:run-all-cells');
}"""
# resolves to null when the code ran, else to "<ename>: <evalue>"
EXECUTE_JS = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code: code, store_history: false});
    let error = null;
    future.onIOPub = (msg) => {
        if (msg.header.msg_type === 'error') error = msg.content.ename + ': ' + msg.content.evalue;
    };
    const reply = await future.done;
    return error || (reply.content.status === 'ok' ? null : 'status ' + reply.content.status);
}"""
OUTPUTS_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
    .map(e => e.innerText.slice(0, 1500))"""


def missing_requirement(chromium: str = CHROMIUM) -> str | None:
    """Why a browser cannot be driven here, or None when it can."""
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        return f"no chromium executable at {chromium} (run tests/browser/setup_chromium.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (run tests/browser/setup_chromium.sh)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(settings: Path) -> None:
    """User settings that keep JupyterLab quiet: no news or update pop-ups."""
    d = settings / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True, exist_ok=True)
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


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its base URL, token and the notebook it serves."""

    base: str
    token: str
    notebook: str

    @property
    def notebook_url(self) -> str:
        return f"{self.base}/lab/tree/{self.notebook}?token={self.token}"


@contextlib.contextmanager
def jupyter_lab(notebook: dict[str, Any], name: str, scratch: Path, kernel_dir: Path | None = None,
                env: dict[str, str] | None = None) -> Iterator[Lab]:
    """JupyterLab serving ``notebook`` (nbformat JSON) as ``scratch/work/<name>``.

    Config, runtime, settings and workspaces live under ``scratch``; the kernel starts in
    ``kernel_dir`` (default: beside the notebook) with the repository on ``PYTHONPATH`` and
    ``env`` added. The server log is ``scratch/jupyter.log`` (its tail is in the error when
    the server does not start).
    """
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(json.dumps(notebook))
    write_lab_settings(scratch / "settings")
    port, token = free_port(), secrets.token_hex(16)
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_CONFIG_DIR=str(scratch / "config"),
                    JUPYTER_RUNTIME_DIR=str(scratch / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(scratch / "settings"),
                    JUPYTERLAB_WORKSPACES_DIR=str(scratch / "workspaces"), OMP_NUM_THREADS="1", **(env or {}))
    # documents and kernels may live in different folders: the kernel starts in its root_dir
    kernel_root = [f"--MappingKernelManager.root_dir={kernel_dir}"] if kernel_dir is not None else []
    log_path = scratch / "jupyter.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", *kernel_root,
         "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=work, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_server(f"{base}/api/status?token={token}", proc, START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; server log:\n{log_path.read_text()[-2000:]}") from e
        yield Lab(base, token, name)
    finally:
        stop_server(proc, base, token)
        log.close()


@contextlib.contextmanager
def chromium_page(chromium: str = CHROMIUM, width: int = 1500, height: int = 1100,
                  timeout_s: float = RUN_TIMEOUT_S) -> Iterator[Any]:
    """A playwright page in headless ``chromium`` (closed after the block)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            yield page
        finally:
            browser.close()


def run_notebook(page, lab: Lab) -> None:
    """Open the lab's notebook and run all its cells (returns once they are queued)."""
    page.goto(lab.notebook_url)
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.evaluate(RUN_ALL_JS)


def wait_for(page, js: str, arg, what: str):
    """Poll ``js(arg)`` until truthy and return its value; on timeout raise ``TimeoutError``
    naming ``what``, with the notebook's outputs."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(js, arg=arg, polling=500).json_value()
    except PlaywrightTimeout:
        raise TimeoutError(f"timed out waiting for {what}; notebook outputs: {page.evaluate(OUTPUTS_JS)}") from None


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
    raise TimeoutError(f"the kernel did not settle to idle within {timeout_s} s")


def kernel_execute(page, code: str) -> None:
    """Run ``code`` in the notebook's kernel (no cell, no output shown), then wait for the
    kernel to settle; ``RuntimeError`` with the kernel's error when it raised."""
    error = page.evaluate(EXECUTE_JS, code)
    if error:
        raise RuntimeError(f"kernel code failed: {error}\n{code}")
    wait_until_idle(page)
