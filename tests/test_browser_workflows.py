"""The shipped workflows in the real ComfyUI frontend, in headless Chromium (Debian's, driven by Playwright):
each loads without errors, graphToPrompt() equals its API twin, a queued run finishes, and a screenshot per
workflow lands in the artifacts folder (printed)."""
from __future__ import annotations

import json
import sys
import time

import pytest

import comfy_harness as H

# Console noise that is not about our workflows: external hosts this machine cannot reach (fonts, release
# notes, telemetry), and the frontend's optional endpoints that this ComfyUI version does not have.
IGNORED = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED", "net::ERR_CONNECTION_REFUSED",
           "Failed to load resource: the server responded with a status of 404")


@pytest.fixture(scope="module")
def page():
    H.require(H.comfy_missing_reason())
    H.require(H.browser_missing_reason())
    from playwright.sync_api import sync_playwright

    server = H.shared_server()
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=H.CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])
    pg = browser.new_page(viewport={"width": 1600, "height": 1000})
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.goto(server.url)
    pg.evaluate("localStorage.setItem('Comfy.TutorialCompleted', 'true')")
    pg.reload()
    pg.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
    time.sleep(1.0)
    pg.keyboard.press("Escape")
    pg.server = server
    yield pg
    browser.close()
    pw.stop()


@pytest.fixture(scope="module", autouse=True)
def announce_artifacts(request):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    yield
    msg = f"\nDiTFuse browser screenshots (CI artifacts): {H.artifacts_dir()}\n"
    if capman is not None:
        with capman.global_and_fixture_disabled():
            sys.stdout.write(msg)
            sys.stdout.flush()


def relevant(errors: list[str]) -> list[str]:
    return [e for e in errors if not any(s in e for s in IGNORED)]


@pytest.mark.parametrize("name", H.workflow_names())
def test_workflow_in_frontend(page, name):
    ui, api = H.load_ui(name), H.load_api(name)
    page.errors.clear()
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, null); }", ui)
    time.sleep(0.5)
    loaded = page.evaluate("() => window.app.graph.nodes.map(n => n.type)")
    assert sorted(loaded) == sorted(n["type"] for n in ui["nodes"]), loaded
    missing = page.evaluate("() => window.app.graph.nodes.filter(n => n.has_errors || n.constructor.name === 'LGraphNode' && n.type !== 'MarkdownNote').map(n => n.type)")
    assert not missing, f"nodes the frontend does not know: {missing}"
    assert not relevant(page.errors), relevant(page.errors)

    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert prompt == api, json.dumps(prompt)[:3000]

    before = set(page.server.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.time() + 300
    pid = None
    while time.time() < deadline and pid is None:
        new = set(page.server.get("/history")) - before
        pid = next(iter(new), None)
        if pid is None:
            time.sleep(0.3)
    assert pid, "queued prompt never reached the history"
    hist = page.server.wait_history(pid)
    assert hist["status"]["status_str"] == "success", hist["status"]
    assert hist["prompt"][2] == api, "the frontend queued a different prompt than the API twin"
    time.sleep(1.0)  # let the preview image arrive over the websocket
    page.evaluate("() => { window.app.canvas.ds.scale = 0.75; window.app.canvas.ds.offset = [60, 340];"
                  " window.app.graph.setDirtyCanvas(true, true); }")
    time.sleep(0.5)
    shot = H.artifacts_dir() / f"workflow_{name}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not relevant(page.errors), relevant(page.errors)
