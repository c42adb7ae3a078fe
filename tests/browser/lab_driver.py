"""A real JupyterLab in Debian's Chromium, driven by Playwright, for the browser tests.

:func:`start_lab` runs JupyterLab on a free loopback port with its own settings, workspace, runtime and
config folders: no token or password, autosave off, windowing off (every cell stays in the page), no
news or update checks, and ``SSVAE_FAST=1`` for its kernels. :class:`NotebookPage` opens a notebook, runs
all cells from the menu and reads widget images as the browser shows them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# no outside connections: no component updates, no background fetches, no first-run pages
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

#: JupyterLab user settings (file name in the settings folder -> content).
LAB_SETTINGS = {
    # every cell stays in the page; the notebook's kernel starts without a "Select Kernel" dialog
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                   "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

#: jupyter_server_config.json of the temporary config folder.
SERVER_CONFIG = {
    "ServerApp": {"ip": "127.0.0.1", "open_browser": False, "port_retries": 0,
                  "disable_check_xsrf": True,   # lets LabServer.api end sessions without a browser cookie
                  "allow_root": True},          # CI runs as root
    "IdentityProvider": {"token": ""},
    "PasswordIdentityProvider": {"hashed_password": "", "password_required": False},
    "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
               "extension_manager": "readonly",
               "expose_app_in_browser": True},   # window.jupyterapp: the tests read cell outputs from it
}


class LabTimeout(Exception):
    """JupyterLab did not reach an expected state in time (the browser tests retry once on it)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    url: str                 # http://127.0.0.1:PORT
    root: Path               # the folder JupyterLab serves
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str):
        """One call of the server's REST API; the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_state(self, notebook: str) -> str | None:
        """'starting', 'busy', 'idle', ... of the kernel of ``notebook``'s session (None: no session)."""
        for session in self.api("GET", "/api/sessions"):
            if session["path"] == notebook and session.get("kernel"):
                return session["kernel"]["execution_state"]
        return None

    def shut_down_kernels(self) -> None:
        """End every notebook session (and its kernel), e.g. between tests."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (it shuts its kernels down); kill its process group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_lab(root: Path, workdir: Path, log: Path, timeout: float = 120,
              environment: dict[str, str | None] | None = None) -> LabServer:
    """Start JupyterLab serving ``root``; its settings, workspaces, runtime and config folders live in
    ``workdir``; its output goes to ``log``; ``environment`` sets (or, with None, removes) variables of its
    kernels' environment. Returns once ``/api/status`` answers."""
    root, workdir = Path(root).resolve(), Path(workdir)
    if not root.is_dir():
        raise ValueError(f"no folder to serve at {root}")
    dirs = {name: workdir / name for name in ("settings", "workspaces", "runtime", "config", "ipython")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for name, content in LAB_SETTINGS.items():
        (dirs["settings"] / name).parent.mkdir(parents=True, exist_ok=True)
        (dirs["settings"] / name).write_text(json.dumps(content, indent=2))
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG, indent=2))

    env = dict(os.environ, SSVAE_FAST="1", JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
               JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), IPYTHONDIR=str(dirs["ipython"]))
    env.pop("MPLBACKEND", None)          # kernels draw inline, as in a user's JupyterLab
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    port = free_port()
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "jupyterlab", f"--port={port}",
                                    f"--ServerApp.root_dir={root}"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", root, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode}; see {log}")
        try:
            server.api("GET", "/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; see {log}")


# -- the page ----------------------------------------------------------------------------------------------
_DIGEST_JS = """async img => {
    if (!img.src) return null;
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const hash = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(hash), b => b.toString(16).padStart(2, '0')).join('');
}"""

# every code cell with code in it has an execution count (JupyterLab clears it while a cell is queued)
_ALL_CELLS_RAN_JS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    let ran = 0;
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== 'code' || !cell.sharedModel.getSource().trim()) continue;
        if (cell.executionCount === null) return false;
        ran++;
    }
    return ran > 0;
}"""

# JupyterLab marks queued and running cells "[*]"; note that it happened (a run may finish between polls)
_WATCH_RUN_JS = """() => {
    window.ssvaeRunSeen = false;
    const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    new MutationObserver(() => {
        if ([...notebook.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*')))
            window.ssvaeRunSeen = true;
    }).observe(notebook, {subtree: true, childList: true, characterData: true});
}"""

_ERRORS_JS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells, errors = [];
    for (let i = 0; i < cells.length; i++) {
        const outputs = cells.get(i).outputs;
        for (let j = 0; outputs && j < outputs.length; j++) {
            const out = outputs.get(j).toJSON();
            if (out.output_type === 'error') errors.push(`cell ${i + 1}: ${out.ename}: ${out.evalue}`);
        }
    }
    return errors;
}"""


# the texts a container's widgets do not show in full: a description label or a button's text cut off
# (ellipsis), or an option of a dropdown wider than the room its <select> leaves beside the arrow, measured
# in the select's font
_CUT_TEXTS_JS = """root => {
    const cut = [];
    for (const element of root.querySelectorAll('.widget-label, button')) {
        if (element.textContent.trim() && element.scrollWidth > element.clientWidth + 1)
            cut.push(`'${element.textContent.trim()}': ${element.scrollWidth} px in ${element.clientWidth} px`);
    }
    const context = document.createElement('canvas').getContext('2d');
    for (const select of root.querySelectorAll('select')) {
        const style = getComputedStyle(select);
        context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        for (const option of select.options) {
            const width = context.measureText(option.text).width;
            if (width > room) cut.push(`option '${option.text}': ${width.toFixed(0)} px in ${room.toFixed(0)} px`);
        }
    }
    return cut;
}"""


class NotebookPage:
    """One Playwright page showing one notebook in JupyterLab."""

    def __init__(self, page, server: LabServer, artifacts: Path):
        self.page, self.server, self.artifacts = page, server, Path(artifacts)
        self.notebook = "page"
        self.blocked: list[str] = []     # URLs outside the server that the page asked for (refused)

    @property
    def name(self) -> str:
        return Path(self.notebook).stem

    def screenshot(self, step: str, element=None) -> Path:
        """Save a screenshot (of ``element`` if given) as ``<artifacts>/<notebook>-<step>.png``."""
        path = self.artifacts / f"{self.name}-{step}.png"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (element or self.page).screenshot(path=str(path))
        return path

    def wait_until(self, what: str, ready, timeout: float, poll: float = 0.5):
        """``ready()``'s first true value, polled every ``poll`` s; :class:`LabTimeout` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not (result := ready()):
            if time.monotonic() > deadline:
                raise LabTimeout(f"{self.notebook}: {what} not within {timeout:.0f} s")
            self.page.wait_for_timeout(poll * 1000)     # not time.sleep: Playwright handles events meanwhile
        return result

    def open(self, notebook: str, timeout: float = 120) -> None:
        """Open ``notebook`` (a path relative to the served folder) and wait until its kernel is idle."""
        self.notebook = notebook
        self.page.goto(f"{self.server.url}/lab/tree/{notebook}?reset", timeout=timeout * 1000)
        first_cell = self.page.locator(".jp-NotebookPanel .jp-Cell").first
        first_cell.wait_for(state="visible", timeout=timeout * 1000)
        self.wait_until("an idle kernel", lambda: self.server.kernel_state(notebook) == "idle", timeout)

    def run_all(self, timeout: float = 240) -> None:
        """Run > Run All Cells from the menu bar; wait until every code cell shows its execution count
        and the kernel is idle, three polls in a row (the kernel idles briefly between cells). Fails at
        once, with the error, when a cell raises."""
        self.page.evaluate(_WATCH_RUN_JS)
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        calm = 0

        def finished() -> bool:
            nonlocal calm
            errors = self.error_outputs()
            assert not errors, f"{self.notebook} raised in the browser: {errors}"
            done = (self.page.evaluate("window.ssvaeRunSeen") and self.page.evaluate(_ALL_CELLS_RAN_JS)
                    and self.server.kernel_state(self.notebook) == "idle")
            calm = calm + 1 if done else 0
            return calm >= 3

        self.wait_until("all cells run", finished, timeout)

    def run_cell(self, index: int, timeout: float = 120) -> None:
        """Run the code cell at ``index`` (0-based, counting every cell) and wait until the kernel is idle."""
        self.page.evaluate("""async index => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = index;
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }""", index)
        self.wait_until("the cell run", lambda: self.server.kernel_state(self.notebook) == "idle", timeout)

    def save(self) -> None:
        """File > Save, as a presenter (or autosave) does."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")

    def cut_texts(self, container) -> list[str]:
        """The description labels, button texts and dropdown options inside ``container`` that the page
        cuts off."""
        return container.evaluate(_CUT_TEXTS_JS)

    def output_text(self, pattern: str) -> str:
        """The text of the first cell output that matches the regular expression ``pattern``."""
        return self.page.locator(".jp-OutputArea-output", has_text=re.compile(pattern)).first.inner_text()

    def error_outputs(self) -> list[str]:
        """'cell i: ename: evalue' for each error output of the open notebook."""
        return self.page.evaluate(_ERRORS_JS)

    def image_digest(self, img) -> str | None:
        """SHA-256 of the bytes an ``<img>`` shows (None when it shows nothing)."""
        return img.evaluate(_DIGEST_JS)

    @staticmethod
    def distortion(img) -> float:
        """How much the page stretches an ``<img>``: shown aspect ratio / the PNG's own, minus 1
        (0 when undistorted)."""
        return img.evaluate("img => (img.clientWidth / img.clientHeight)"
                            " / (img.naturalWidth / img.naturalHeight) - 1")

    def settled_image(self, img, quiet: float = 1.5, timeout: float = 60) -> str:
        """The digest of what an ``<img>`` shows once it has shown something and stayed the same for
        ``quiet`` seconds (updates sent by the kernel may still be arriving)."""
        digest, since = None, time.monotonic()

        def steady():
            nonlocal digest, since
            now = self._safe_digest(img)
            if now != digest:
                digest, since = now, time.monotonic()
            return digest is not None and time.monotonic() - since >= quiet

        self.wait_until("a steady image", steady, timeout, poll=0.25)
        return digest

    def _safe_digest(self, img) -> str | None:
        try:
            return self.image_digest(img)
        except Exception:   # noqa: BLE001 - the blob was replaced while being read
            return None

    def wait_for_new_image(self, img, old: str | None, timeout: float = 60) -> str:
        """Wait until the ``<img>`` shows bytes other than ``old``; return their digest."""
        deadline = time.monotonic() + timeout
        while True:
            digest = self._safe_digest(img)
            if digest is not None and digest != old:
                return digest
            if time.monotonic() > deadline:
                raise AssertionError(f"the image did not change within {timeout:.0f} s")
            self.page.wait_for_timeout(250)
