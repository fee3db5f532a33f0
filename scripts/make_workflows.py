#!/usr/bin/env python3
"""Generate the shipped ComfyUI workflows: workflows/<name>.json (UI format, version 0.4, what a person
drags into ComfyUI) and workflows/api/<name>.json (API format, what /prompt takes), from one description.

The widget order of every node comes from the real node definitions (ComfyUI loaded in-process with this
pack, see tests/comfy_harness.py), and the API twin is derived from the UI graph the way the frontend's
graphToPrompt() does it; the browser test checks that the frontend agrees. Do not edit the JSON by hand.

    .venv/bin/python scripts/make_workflows.py            # (re)write workflows/
    .venv/bin/python scripts/make_workflows.py --check    # fail if workflows/ differs from a fresh run

Each workflow also gets its template-browser thumbnail, <name>.jpg (what ComfyUI's browser loads for a custom
node's template): the workflow run with the bundled model, its input pair and results side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from comfy_harness import WF  # noqa: E402  (file names: the template browser's card titles)
from ditfuse_core import examples  # noqa: E402  (torch-free: the example pairs' instructions)

# Every shipped workflow leaves sampling at "model default" (steps 0, cfg / img_cfg -1, max_side 0): the model
# picked in the loader brings its own settings (ditfuse.json), so the same JSON runs the bundled tiny model in
# seconds on a CPU (1 step, one branch) and OmniGen-v1 + DiTFuse as the authors do (50 steps, cfg 2.0, img_cfg
# 1.6, 1024 px).
STEPS, CFG, IMG_CFG, MAX_SIDE, SEED = 0, -1.0, -1.0, 0, 0
# The chain encodes image 1 at CHAIN_SIDE and upscales that latent CHAIN_SCALE×: the output size. The Condition
# prepares the images at that same size: the bundled model fuses token by token at equal positions, so an output
# larger than its inputs repeated them as tiles around the centre (768 px stays well within its 2048 px)
CHAIN_SIDE, CHAIN_SCALE = 512, 1.5
CHAIN_OUT = int(CHAIN_SIDE * CHAIN_SCALE)
CHAIN_LEAD = (f"The latent sets the output size ({CHAIN_SIDE} px encoded, upscaled {CHAIN_SCALE}×: {CHAIN_OUT} px); "
              "*DiTFuse Condition* prepares the images at the same size, as the authors fuse: the bundled model takes "
              "each output patch from the input patches at the same position, so it needs inputs as large as the "
              "output.")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

NOTE = (
    "## DiTFuse\n"
    "Runs out of the box with the bundled **ditfuse-tiny** model (small and fast, constructed, not trained: each "
    "part of the result comes more from the input with more detail, or the better-exposed one, and control "
    "prompts brighten, darken or change contrast by fixed amounts; an instruction that asks for warm targets, "
    "like the infrared-visible template's, keeps the infrared's warm regions at its brightness) and the bundled "
    "example pair.\n\n"
    "For real results put **OmniGen-v1** (original folder or diffusers format) in `models/ditfuse/` and the "
    "**DiTFuse LoRA** in `models/ditfuse/loras/` and pick them in *DiTFuse Model Loader*: nothing else changes. "
    "Sampling is left at *model default* (steps 0, cfg and img_cfg -1), so each model runs with its own settings "
    "(OmniGen-v1 + DiTFuse: the authors' 50 steps, cfg 2.0, img_cfg 1.6, 1024 px). Segmentation needs the "
    "real weights: the bundled model fuses without an overlay.\n\n"
    "Image 1 = visible / far focus / over-exposed; image 2 = infrared / near focus / under-exposed. "
    "Replace *DiTFuse Example Pair* with two *Load Image* nodes for your own images."
)


# Segmentation with the bundled model: said on the card and at the top of the workflow's note.
REAL_ONLY = "needs the real DiTFuse weights: the bundled model fuses without an overlay (empty mask)"
CARD_CAPTION = "needs the real DiTFuse weights"


def loader(bundled: str):
    return ("loader", "DiTFuseModelLoader",
            {"model": bundled, "lora": "none", "lora_strength": 1.0, "dtype": "auto", "offload": True,
             "weights": "auto", "download_if_missing": False})


def sampling(**extra):
    return {"seed": SEED, "steps": STEPS, "cfg": CFG, "img_cfg": IMG_CFG, **extra}


def workflows(bundled: str) -> dict[str, dict]:
    """name → {"title", "nodes": [(key, class_type, inputs)]}; an input value (key, slot) is a link."""
    wf = {}
    for task, title in (("ivif", "infrared-visible fusion"), ("mff", "multi-focus fusion"),
                        ("mef", "multi-exposure fusion")):
        wf[WF[task]] = {"title": f"DiTFuse {title}", "nodes": [
            loader(bundled),
            ("pair", "DiTFuseExamplePair", {"pair": task}),
            ("fuse", "DiTFuseFuse", {"model": ("loader", 0), "image_1": ("pair", 0), "image_2": ("pair", 1),
                                     "task": task, "instruction": examples.pairs()[task]["instruction"], **sampling(),
                                     "max_side": MAX_SIDE}),
            ("save", "SaveImage", {"images": ("fuse", 0), "filename_prefix": f"DiTFuse/{task}"}),
        ]}
    wf[WF["control"]] = {"title": "DiTFuse control (fuse an exposure pair and brighten it)",
                         "nodes": [
        loader(bundled),
        ("pair", "DiTFuseExamplePair", {"pair": "mef"}),
        ("control", "DiTFuseControl", {"model": ("loader", 0), "image_1": ("pair", 0), "image_2": ("pair", 1),
                                       "adjustment": "LIGHT+", "instruction": "", **sampling(),
                                       "max_side": MAX_SIDE}),
        ("preview", "PreviewImage", {"images": ("control", 0)}),
    ]}
    wf[WF["segmentation"]] = {"title": "DiTFuse segmentation (fuse a pair, overlay and mask)", "caption": REAL_ONLY,
                              "nodes": [
        loader(bundled),
        ("pair", "DiTFuseExamplePair", {"pair": "ivif"}),
        ("segment", "DiTFuseSegment", {"model": ("loader", 0), "image_1": ("pair", 0), "image_2": ("pair", 1),
                                       "class_name": "person", "instruction": "", **sampling(),
                                       "max_side": MAX_SIDE}),
        ("overlay", "PreviewImage", {"images": ("segment", 0)}),
        ("mask_image", "MaskToImage", {"mask": ("segment", 1)}),
        ("mask_preview", "PreviewImage", {"images": ("mask_image", 0)}),
    ]}
    wf[WF["chain"]] = {"title": "DiTFuse chain: Encode → core Upscale Latent By → Sampler → Decode",
                       "lead": CHAIN_LEAD, "nodes": [
        loader(bundled),
        ("pair", "DiTFuseExamplePair", {"pair": "ivif"}),
        ("cond", "DiTFuseCondition", {"model": ("loader", 0), "image_1": ("pair", 0), "image_2": ("pair", 1),
                                      "task": "ivif", "instruction": "", "max_side": CHAIN_OUT}),
        ("encode", "DiTFuseEncode", {"model": ("loader", 0), "image": ("pair", 0), "max_side": CHAIN_SIDE,
                                     "seed": SEED}),
        ("upscale", "LatentUpscaleBy", {"samples": ("encode", 0), "upscale_method": "nearest-exact",
                                        "scale_by": CHAIN_SCALE}),
        ("sampler", "DiTFuseSampler", {"model": ("loader", 0), "conditioning": ("cond", 0), **sampling(),
                                       "latent": ("upscale", 0)}),
        ("decode", "DiTFuseDecode", {"model": ("loader", 0), "latent": ("sampler", 0), "restore_size": False}),
        ("preview", "PreviewImage", {"images": ("decode", 0)}),
    ]}
    return wf


# ---- UI graph construction ---------------------------------------------------------------------------------
def _inputs_of(info: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) in definition order (required, then optional)."""
    out = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(typ, list):
                typ = "COMBO"
            out.append((name, typ, opts))
    return out


def build(name: str, spec: dict, object_info) -> tuple[dict, dict]:
    keys = [k for k, _, _ in spec["nodes"]]
    ids = {k: i + 1 for i, k in enumerate(keys)}
    infos = {k: object_info(ct) for k, ct, _ in spec["nodes"]}
    links, nodes, api = [], [], {}
    out_links: dict[tuple[str, int], list[int]] = {}
    depth: dict[str, int] = {}

    for key, ct, values in spec["nodes"]:
        d = 0
        for v in values.values():
            if isinstance(v, tuple):
                d = max(d, depth[v[0]] + 1)
        depth[key] = d

    for key, ct, values in spec["nodes"]:
        info = infos[key]
        sockets, widgets, api_inputs = [], [], {}
        for inp, typ, opts in _inputs_of(info):
            v = values.get(inp)
            if typ in WIDGET_TYPES and not isinstance(v, tuple):
                if v is None:
                    raise KeyError(f"{name}: {key}.{inp} needs a value")
                widgets.append(v)
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                api_inputs[inp] = v
                continue
            link = None
            if isinstance(v, tuple):
                link = len(links) + 1
                src, slot = v
                links.append([link, ids[src], slot, ids[key], len(sockets), infos[src]["output"][slot]])
                out_links.setdefault((src, slot), []).append(link)
                api_inputs[inp] = [str(ids[src]), slot]
            elif not (section_optional(info, inp)):
                raise KeyError(f"{name}: required input {key}.{inp} is not connected")
            sockets.append({"name": inp, "type": typ, "link": link})
        props = {"Node name for S&R": ct}
        if ct == "DiTFuseModelLoader":
            from comfy_harness import pack_adapters

            props["models"] = pack_adapters().REAL_WEIGHTS
        nodes.append({"id": ids[key], "type": ct, "_key": key, "inputs": sockets, "widgets_values": widgets,
                      "properties": props})
        api[str(ids[key])] = {"inputs": api_inputs, "class_type": ct, "_meta": {"title": info["display_name"]}}

    # outputs, layout, order
    col_rows: dict[int, int] = {}
    order = sorted(range(len(nodes)), key=lambda i: (depth[nodes[i]["_key"]], i))
    for rank, i in enumerate(order):
        n = nodes[i]
        key = n.pop("_key")
        info = infos[key]
        n["outputs"] = [{"name": oname, "type": otype, "slot_index": s, "links": out_links.get((key, s), [])}
                        for s, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))]
        col = depth[key]
        row = col_rows.get(col, 0)
        n_widgets = len(n["widgets_values"])
        height = 46 + 22 * max(len(n["inputs"]), len(n["outputs"])) + 26 * n_widgets
        if n["type"] in ("PreviewImage", "SaveImage"):
            height = max(height, 300)
        n["pos"] = [40 + 380 * col, 120 + row]
        n["size"] = [340, height]
        col_rows[col] = row + height + 60
        n["flags"] = {}
        n["order"] = rank
        n["mode"] = 0
    ordered = [{k: n[k] for k in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs",
                                  "properties", "widgets_values")} for n in nodes]
    note_id = len(nodes) + 1
    note = (f"# {spec['title']}\n\n" + (f"**This task {spec['caption']}.**\n\n" if spec.get("caption") else "")
            + (f"{spec['lead']}\n\n" if spec.get("lead") else "") + NOTE)
    ordered.append({"id": note_id, "type": "MarkdownNote", "pos": [40, -240], "size": [720, 300], "flags": {},
                    "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                    "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
    ui = {"id": f"00000000-0000-4000-8000-{abs(hash_name(name)):012d}"[:36], "revision": 0,
          "last_node_id": note_id, "last_link_id": len(links), "nodes": ordered, "links": links, "groups": [],
          "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 300]}, "ditfuse": {"title": spec["title"],
                                                                                       "generated_by": "scripts/make_workflows.py"}},
          "version": 0.4}
    return ui, api


def section_optional(info: dict, inp: str) -> bool:
    return inp in info["input"].get("optional", {})


def hash_name(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode()) % 10**12


def write_all(out: Path, thumbnails: bool = True) -> list[str]:
    from comfy_harness import InProcessComfy, pack_adapters

    bundled_choice = pack_adapters().bundled_choice
    comfy = InProcessComfy.get()
    (out / "api").mkdir(parents=True, exist_ok=True)
    names = []
    for name, spec in workflows(bundled_choice()).items():
        ui, api = build(name, spec, comfy.object_info)
        (out / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (out / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        if thumbnails:
            caption = CARD_CAPTION if spec.get("caption") else None
            thumbnail(comfy, api, caption).save(out / f"{name}.jpg", quality=85, optimize=True)
        names.append(name)
    return names


THUMB_H = 200
SHOWN = {"DiTFuseExamplePair": (0, 1), "DiTFuseFuse": (0,), "DiTFuseControl": (0,), "DiTFuseSegment": (0, 1),
         "DiTFuseDecode": (0,)}


def thumbnail(comfy, api: dict, caption: str | None = None):
    """The workflow's template card: it runs (bundled model) and its input pair and results are laid side by
    side, THUMB_H high; `caption` is written across the bottom."""
    from PIL import Image, ImageDraw

    res = comfy.run(api)
    tiles = []
    for nid, node in api.items():
        for slot in SHOWN.get(node["class_type"], ()):
            t = res[nid][slot][0][0]
            arr = (t.clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
            im = Image.fromarray(arr).convert("RGB")
            tiles.append(im.resize((max(1, round(im.width * THUMB_H / im.height)), THUMB_H), Image.LANCZOS))
    gap = 6
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), THUMB_H), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + gap
    if caption:  # large: the card shows the thumbnail at about a third of its size
        from PIL import ImageFont

        font = ImageFont.load_default(size=34)
        draw = ImageDraw.Draw(sheet)
        draw.rectangle([0, THUMB_H - 46, sheet.width, THUMB_H], fill="white")
        draw.text((10, THUMB_H - 42), caption, fill="black", font=font)
    return sheet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "workflows")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            names = write_all(Path(tmp), thumbnails=False)
            bad = []
            for rel in [f"{n}.json" for n in names] + [f"api/{n}.json" for n in names]:
                want = (Path(tmp) / rel).read_text()
                have = (a.out / rel).read_text() if (a.out / rel).is_file() else None
                if want != have:
                    bad.append(rel)
            extra = sorted({p.name for p in a.out.glob("*.json")} - {f"{n}.json" for n in names})
            bad += [f"{n}.jpg" for n in names if not (a.out / f"{n}.jpg").is_file()]
            if bad or extra:
                print(f"workflows out of date (run scripts/make_workflows.py): {bad} extra: {extra}",
                      file=sys.stderr)
                return 1
        print(f"workflows up to date: {', '.join(names)}")
        return 0
    names = write_all(a.out)
    print(f"wrote {len(names)} workflows to {a.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
