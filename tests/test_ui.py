"""The Dagster UI as users meet it: the webserver on the workspace, the asset graph in headless
Chromium (driven through chromedriver's W3C WebDriver HTTP API), from the export files to the reports,
with a screenshot; and every asset described, owned and grouped so the graph explains itself.

Needs the Debian packages chromium and chromium-driver (.ci/run installs them). Where they are
absent the browser test is skipped, except with CI=true, where it fails.
Screenshots: $TRIAL_UI_SCREENSHOTS or output/ui/ (asset-graph.png, asset-manifest.png).
"""

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from conftest import DEMO_CUT, ROOT, STUDY

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("TRIAL_UI_SCREENSHOTS") or ROOT / "output" / "ui")
GROUPS = ["export", "ingest", "derive", "report"]
EXPANDED = ",".join(f"global@global:{g}" for g in GROUPS)  # the UI's id of a group in the global graph
# Asset key -> (group, name shown on its node)
EXPECTED = {
    "export/ae": ("export", "ae"),
    "raw/ae": ("ingest", "ae"),
    "ingest/export_snapshot": ("ingest", "export_snapshot"),
    "analysis/adsl": ("derive", "adsl"),
    "analysis/adae": ("derive", "adae"),
    "report/dsmb_report": ("report", "dsmb_report"),
    "report/manifest": ("report", "manifest"),
}


def _need(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires it (.ci/run installs it)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and whatever it started (the webserver's code server)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class WebDriver:
    """The few W3C WebDriver commands the test needs, over plain HTTP."""

    def __init__(self, url: str):
        self.url = url
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1920,4200"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read()[:500]!r}") from None

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def size(self, width: int, height: int) -> None:
        self.cmd("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))
        return path

    def wait_for(self, script: str, timeout: float = 90, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what or script}")
            time.sleep(0.5)

    def quit(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.cmd("DELETE", "")


# Nodes of the asset graph with the group box each lies in (the graph is an SVG of foreignObjects).
NODES_JS = """
const fos = [...document.querySelectorAll('svg foreignObject')];
const box = f => ({x: +f.getAttribute('x'), y: +f.getAttribute('y'), w: +f.getAttribute('width'), h: +f.getAttribute('height')});
const groups = fos.filter(f => f.querySelector('[class*=assetNodeContainer]') === null && arguments[0].includes(f.textContent.trim()))
                  .map(f => [f.textContent.trim(), box(f)]);
return fos.filter(f => f.querySelector('[class*=assetNodeContainer]') !== null).map(f => {
  const b = box(f);
  const g = groups.find(([n, gb]) => b.x >= gb.x && b.y >= gb.y && b.x + b.w <= gb.x + gb.w && b.y + b.h <= gb.y + gb.h);
  return [g ? g[0] : null, f.textContent.trim()];
});
"""


def test_every_asset_explains_itself():
    """Descriptions, owners, groups and kinds on every asset: what the UI shows beside each node."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 30, name
        assert node.owners == ["team:clinical-data-engineering"], name
        assert node.group_name in GROUPS, name
        assert node.kinds, name
    assert {k: (graph.get(dg.AssetKey.from_user_string(k)).group_name) for k in EXPECTED} == {
        k: g for k, (g, _) in EXPECTED.items()
    }


@pytest.mark.slow
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not IN_CI,
    reason="Chromium or chromedriver not installed (Debian packages chromium, chromium-driver)",
)
def test_asset_graph_in_headless_chromium(demo_run, tmp_path, monkeypatch):
    _need(bool(CHROMIUM), "Chromium is not installed (Debian package chromium)")
    _need(bool(CHROMEDRIVER), "chromedriver is not installed (Debian package chromium-driver)")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "pipelines" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    web_port, driver_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{web_port}"
    with open(tmp_path / "webserver.log", "wb") as log:
        web = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(web_port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    driver_proc = subprocess.Popen([CHROMEDRIVER, f"--port={driver_port}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    browser = None
    try:
        # Meanwhile, a run into the same instance, so the graph shows materializations and their metadata.
        from pipelines.run import run_export

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        rc = run_export(str(STUDY), str(demo_run.export), str(tmp_path / "out"), DEMO_CUT)
        assert rc == 0, "the run that populates the UI's instance failed"
        _wait_http(f"{base}/server_info", 180, web)
        _wait_http(f"http://127.0.0.1:{driver_port}/status", 30, driver_proc)
        browser = WebDriver(f"http://127.0.0.1:{driver_port}")
        browser.get(base + "/")
        browser.js("localStorage.setItem('communityNux', '1');"  # the one-time community dialog
                   "localStorage.setItem('asset-graph-direction', JSON.stringify('horizontal'));")
        # Every asset of the code location, as (group, name on its node).
        from pipelines.definitions import defs

        graph = defs.resolve_asset_graph()
        every = sorted({(graph.get(k).group_name, k.path[-1]) for k in graph.get_all_asset_keys()})
        assert set(EXPECTED.values()) <= set(every)
        script = (
            f"const n = (function() {{ {NODES_JS} }}).apply(null, [{json.dumps(GROUPS)}]);"
            f"const every = {json.dumps([list(v) for v in every])};"
            "const missing = every.filter(w => !n.some(x => x[0] === w[0] && x[1] === w[1]));"
            # ... and the status of every materializable asset loaded (green: materialized by the run).
            "const boxes = [...document.querySelectorAll('[class*=minimalAssetNodeBox][class*=materializable]')];"
            "const green = boxes.length > 0 && boxes.every(b => (b.getAttribute('style') || '').includes('accent-green'));"
            "const svg = document.querySelector('svg[class*=svgContainer]');"
            "const bottom = svg ? svg.getBoundingClientRect().bottom : 0;"
            "return {nodes: n, missing: missing, green: green, bottom: bottom, height: window.innerHeight};"
        )
        graph_url = f"{base}/asset-groups?expanded={urllib.parse.quote(EXPANDED)}"
        ready = f"const s = (function() {{ {script} }})(); return s.missing.length || !s.green ? null : s;"
        # Nodes outside the window are not rendered: if the graph has outgrown the window, a taller one.
        for attempt, height in enumerate((4200, 6500, 9000)):
            if attempt:
                browser.size(1920, height)
            browser.get(graph_url)
            try:
                state = browser.wait_for(ready, timeout=60, what="every asset on the graph, materialized")
                break
            except TimeoutError:
                state = browser.js(f"return (function() {{ {script} }})();")
                if height == 9000:
                    raise AssertionError(f"not on the graph: {state['missing']}; all materialized: {state['green']}")
        shot = browser.screenshot(SHOTS / "asset-graph.png")
        by_group = {g: sorted(n for gg, n in state["nodes"] if gg == g) for g in GROUPS}
        from clinical.crf import FORM_IDS

        assert by_group["export"] == sorted(FORM_IDS), by_group
        assert {*FORM_IDS, "export_snapshot"} <= set(by_group["ingest"]), by_group
        assert {"adsl", "adae", "participant_flow", "safety_tables", "data_queries"} <= set(by_group["derive"]), by_group
        assert {"dsmb_report", "sponsor_workbook", "registry_results", "queries_workbook", "manifest"} <= set(
            by_group["report"]
        ), by_group
        assert shot.stat().st_size > 50_000
        # Selecting a node opens its details: full key, description and the latest materialization's metadata.
        browser.size(1920, 1200)
        for key in EXPECTED:
            browser.get(f"{base}/asset-groups/{urllib.parse.quote(key, safe='')}?expanded={urllib.parse.quote(EXPANDED)}")
            heading = " / ".join(key.split("/"))
            must = [heading, "Description"]
            if not key.startswith("export/"):
                must += ["Latest materialization", "Materialized"]
            if key == "report/manifest":
                must += ["output_folder", "database_sha256", "export_sha256"]
            browser.wait_for(
                f"const t = document.body.innerText; return {json.dumps(must)}.every(m => t.includes(m));",
                timeout=60, what=f"the details of {key} ({must})",
            )
        browser.screenshot(SHOTS / "asset-manifest.png")
    finally:
        if browser:
            browser.quit()
        for proc in (driver_proc, web):
            _stop(proc)
