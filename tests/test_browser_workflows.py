"""The shipped workflows in the real ComfyUI frontend, in headless Chromium (Debian's, driven by Playwright):
each loads without errors, graphToPrompt() equals its API twin, a queued run finishes, and a screenshot per
workflow lands in the artifacts folder (printed)."""
from __future__ import annotations

import json
import sys
import time
import urllib.parse

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


def test_template_browser_shows_our_cards_with_their_thumbnails(page):
    """Browse Templates → Extensions → ComfyUI-DiTFuse: one card per shipped workflow, showing our <name>.jpg
    (served, decoded at its real size: not the placeholder) above its title and (frontend 1.32) description —
    both the file's name, which is what ComfyUI's browser shows for a custom node's template."""
    from PIL import Image

    served = {}
    on_response = lambda r: served.__setitem__(urllib.parse.unquote(r.url), r.status)  # noqa: E731
    page.on("response", on_response)
    try:
        page.keyboard.press("Escape")
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.get_by_text(H.PACK_NAME, exact=True).first.click(timeout=60_000)
        names = H.workflow_names()
        cards = {}
        for name in names:  # each card: the nearest ancestor of its title that holds an image and no other title
            title = page.get_by_text(name, exact=True).first
            deadline = time.time() + 60
            while True:  # a card's <img> may join the DOM after its title (frontend 1.35): until then the
                card = title.locator("xpath=ancestor::*[.//img][1]")  # nearest such ancestor holds other cards
                if not any(n in card.inner_text() for n in names if n != name) or time.time() > deadline:
                    break
                time.sleep(0.2)
            img = card.locator("img").first
            img.scroll_into_view_if_needed(timeout=60_000)
            while img.evaluate("i => i.naturalWidth") == 0 and time.time() < deadline:
                time.sleep(0.2)
            cards[name] = {"size": tuple(img.evaluate("i => [i.naturalWidth, i.naturalHeight]")),
                           "text": card.inner_text()}
            card.screenshot(path=str(H.artifacts_dir() / f"template_card_{name}.png"))  # one artifact per card
        page.screenshot(path=str(H.artifacts_dir() / "template_browser.png"))
    finally:
        page.remove_listener("response", on_response)
        page.keyboard.press("Escape")
    for name in names:
        url = next((u for u in served if u.endswith(f"/api/workflow_templates/{H.PACK_NAME}/{name}.jpg")), None)
        assert url and served[url] == 200, (name, sorted(served)[-20:])
        assert cards[name]["size"] == Image.open(H.WORKFLOWS / f"{name}.jpg").size, (name, cards[name])
        text = cards[name]["text"]
        assert name in text, cards[name]  # the title
        # the description line: frontend 1.32 shows the name with - and _ as spaces; 1.49 shows none for these
        assert name.replace("-", " ") in text or text.count("DiTFuse") == 1, cards[name]


def test_outputs_have_names_and_hovering_an_input_shows_its_tooltip(page):
    page.reload()  # nothing left over (dialogs, toasts) between the pointer and the canvas
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
    time.sleep(1.0)
    page.keyboard.press("Escape")
    names = page.evaluate("""() => { window.app.graph.clear(); const n = LiteGraph.createNode('DiTFuseExamplePair');
        window.app.graph.add(n); return n.outputs.map(o => o.label || o.localized_name || o.name); }""")
    assert names == ["image 1 (visible / far focus / over-exposed)", "image 2 (infrared / near focus / under-exposed)"]
    x, y = page.evaluate("""() => { window.app.graph.clear(); const n = LiteGraph.createNode('DiTFuseFuse');
        n.pos = [300, 200]; window.app.graph.add(n); const c = window.app.canvas; c.ds.scale = 1; c.ds.offset = [0, 0];
        c.setDirty(true, true); const p = c.ds.convertOffsetToCanvas(n.getConnectionPos(true, 1));
        const r = c.canvas.getBoundingClientRect(); return [r.left + p[0], r.top + p[1]]; }""")  # input 1: image_1
    page.mouse.move(x + 5, y)
    page.mouse.move(x + 6, y + 1)
    page.wait_for_function("() => [...document.querySelectorAll('.node-tooltip')].some(e => e.innerText.includes("
                           "'far-focus'))", timeout=15_000)
    page.screenshot(path=str(H.artifacts_dir() / "input_tooltip.png"))
    page.mouse.move(5, 5)
    page.evaluate("() => window.app.graph.clear()")


def test_loading_a_workflow_whose_model_is_missing_warns_before_run(page):
    ui = H.load_ui("ivif")
    loader = next(n for n in ui["nodes"] if n["type"] == "DiTFuseModelLoader")
    loader["widgets_values"][0] = "OmniGen-v1-not-installed"
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, null); }", ui)
    page.wait_for_function("() => [...document.querySelectorAll('.p-toast-message')].some(t => "
                           "t.innerText.includes('OmniGen-v1-not-installed'))", timeout=30_000)
    text = page.evaluate("() => [...document.querySelectorAll('.p-toast-message')].map(t => t.innerText).join('\\n')")
    assert "not installed" in text and "model" in text, text
    label = page.evaluate("() => window.app.graph.nodes.find(n => n.type === 'DiTFuseModelLoader')"
                          ".widgets.find(w => w.name === 'model').label")
    assert label == "model (missing)"
    page.screenshot(path=str(H.artifacts_dir() / "missing_model_warning.png"))
    page.evaluate("() => { document.querySelectorAll('.p-toast-close-button').forEach(b => b.click()); }")
