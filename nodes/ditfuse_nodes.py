"""DiTFuse ComfyUI nodes (V3 schema). Thin adapters over ditfuse_core; imported only inside ComfyUI."""
from __future__ import annotations

import json
import logging
import os

import torch
from typing_extensions import override

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
from comfy_api.latest import ComfyExtension, io, ui

from ditfuse_core import prompts

from . import adapters as A

log = logging.getLogger("ditfuse")
CATEGORY = "DiTFuse"

DiTFuseModelType = io.Custom("DITFUSE_MODEL")
DiTFuseConditioningType = io.Custom("DITFUSE_CONDITIONING")


# ---- model folder ----------------------------------------------------------------------------------------
def register_model_folder() -> None:
    """models/ditfuse under ComfyUI's models dir, added (never assigned: that would drop the user's
    extra_model_paths.yaml `ditfuse:` entries)."""
    folder_paths.add_model_folder_path(A.FOLDER_KEY, os.path.join(folder_paths.models_dir, A.FOLDER_KEY),
                                       is_default=True)


def model_roots() -> list[str]:
    try:
        return folder_paths.get_folder_paths(A.FOLDER_KEY)
    except KeyError:
        return []


# ---- the model object -------------------------------------------------------------------------------------
class DiTFuseModule(torch.nn.Module):
    """Transformer + VAE as one nn.Module, so ComfyUI's ModelPatcher can move and account for it."""

    def __init__(self, pipe):
        super().__init__()
        self.transformer = pipe.transformer
        self.vae = pipe.vae

    def get_dtype(self):
        return self.transformer.dtype


class DiTFuseModel:
    """DITFUSE_MODEL: the pipeline plus its ModelPatcher. Call .pipeline() before use: it asks ComfyUI's
    memory manager to load the weights on its device (and lets it offload them later)."""

    def __init__(self, pipe, patcher, info: dict):
        self.pipe = pipe
        self.patcher = patcher
        self.info = info

    def pipeline(self):
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.pipe

    def __repr__(self):
        return f"DiTFuseModel({self.info})"


def _progress(total: int, node_id=None):
    pbar = comfy.utils.ProgressBar(total, node_id=node_id)

    def cb(done: int, tot: int):
        # Cancel within one step: raises InterruptProcessingException when the user pressed Cancel.
        mm.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, tot)

    return cb


def _check_pair(image_1, image_2) -> int:
    """Batch size of a pair (image_2 may be None), by the core's batch rule."""
    from ditfuse_core.pipeline import batch_size

    A.check_image("image_1", image_1)
    if image_2 is not None:
        A.check_image("image_2", image_2)
    return batch_size({"image_1": image_1, "image_2": image_2})


def _interrupt_check():
    mm.throw_exception_if_processing_interrupted()


MODEL_DEFAULT = ("the model's own default (its ditfuse.json: OmniGen-v1 + DiTFuse 50 steps, cfg 2.0, img_cfg 1.6; "
                 "the bundled model 2 / 1.0 / 1.0), so one workflow runs either model as intended")
SAMPLING_INPUTS = lambda: [  # noqa: E731
    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                 tooltip="Noise seed; batch item i uses seed + i."),
    io.Int.Input("steps", default=0, min=0, max=1000, tooltip=f"Euler steps. 0 = {MODEL_DEFAULT}."),
    io.Float.Input("cfg", default=-1.0, min=-1.0, max=20.0, step=0.05, round=0.01,
                   tooltip=f"Text guidance. -1 = {MODEL_DEFAULT}."),
    io.Float.Input("img_cfg", default=-1.0, min=-1.0, max=20.0, step=0.05, round=0.01,
                   tooltip=f"Image guidance. -1 = {MODEL_DEFAULT}."),
]
IMAGE_1_TIP = "Visible (IVIF) / far focus (MFF) / over-exposed (MEF) image."
IMAGE_2_TIP = "Infrared (IVIF) / near focus (MFF) / under-exposed (MEF) image."
PAIR_TIP = " Optional: without it, image 1 is given as both images (the authors' two-image layout)."
INSTRUCTION_TIP = ("Replaces the standard requirement sentence; empty = the authors' standard prompt for the "
                   "task. Presets (the authors' first, then variants):\n")
MAX_SIDE = lambda: io.Int.Input("max_side", default=0, min=0, max=4096, step=16,  # noqa: E731
                                tooltip="Inputs are resized so the longest side is this (multiple of 16). 0: the "
                                        "model's own working size (OmniGen-v1: 1024; the bundled model: 1024 and "
                                        "at least 2x enlarged, up to 2048 px, slower on large images). The "
                                        "output is restored to image 1's original size.")


# ---- nodes -------------------------------------------------------------------------------------------------
class DiTFuseModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        roots = model_roots()
        return io.Schema(
            node_id="DiTFuseModelLoader",
            display_name="DiTFuse Model Loader",
            category=CATEGORY,
            description="Loads an OmniGen-v1 model (original or diffusers folder in models/ditfuse, or the bundled "
                        "tiny model) with an optional DiTFuse LoRA.",
            inputs=[
                io.Combo.Input("model", options=A.list_models(roots), default=A.bundled_choice(),
                               tooltip="A model folder in models/ditfuse (original OmniGen-v1 or diffusers format)."),
                io.Combo.Input("lora", options=A.list_loras(roots), default=A.NO_LORA,
                               tooltip="A DiTFuse LoRA file or folder in models/ditfuse/loras."),
                io.Float.Input("lora_strength", default=1.0, min=-4.0, max=4.0, step=0.05),
                io.Combo.Input("dtype", options=list(A.DTYPES), default="auto",
                               tooltip="auto: the precision the model's ditfuse.json asks for (the bundled model: fp32), else "
                                       "bf16 on GPUs that support it, fp16 on other accelerators, fp32 on CPU "
                                       "(a KL VAE in bf16 where the CPU has it natively: ~2× faster; the bundled model's linear "
                                       "autoencoder always in fp32)."),
                io.Boolean.Input("offload", default=True,
                                 tooltip="Let ComfyUI move the model off the GPU when other models need the memory."),
            ],
            outputs=[DiTFuseModelType.Output("DITFUSE_MODEL")],
        )

    @classmethod
    def validate_inputs(cls, model, lora):
        roots = model_roots()
        try:
            A.resolve_model(model, roots)
            A.resolve_lora(lora, roots)
        except FileNotFoundError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, lora, lora_strength, dtype, offload) -> io.NodeOutput:
        from ditfuse_core.pipeline import DiTFusePipeline, resolve_dtypes

        roots = model_roots()
        folder = A.resolve_model(model, roots)
        lora_path = A.resolve_lora(lora, roots)
        load_device = mm.get_torch_device()
        offload_device = mm.unet_offload_device() if offload else load_device
        dt, vae_dt = resolve_dtypes(folder, load_device, dtype)
        pipe = DiTFusePipeline.from_pretrained(model=folder, lora=lora_path, lora_strength=lora_strength,
                                               device=offload_device, dtype=dt, vae_dtype=vae_dt)
        patcher = comfy.model_patcher.ModelPatcher(DiTFuseModule(pipe), load_device=load_device,
                                                   offload_device=offload_device)
        info = {"model": model, "lora": lora, "lora_strength": lora_strength, "dtype": str(dt), "vae_dtype": str(vae_dt),
                "load_device": str(load_device), "offload_device": str(offload_device)}
        log.info("DiTFuse: loaded %s", info)
        return io.NodeOutput(DiTFuseModel(pipe, patcher, info))


class DiTFuseFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseFuse",
            display_name="DiTFuse Fuse",
            category=CATEGORY,
            description="Instruction-driven fusion of two images (IVIF / MFF / MEF / generic). N pairs give N "
                        "images; a single image is used with every item of the other input.",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", tooltip=IMAGE_2_TIP),
                io.Combo.Input("task", options=list(A.TASKS), default="ivif",
                               tooltip="ivif: infrared + visible; mff: multi-focus; mef: multi-exposure; generic: "
                                       "any two images (the M3 prompt)."),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip=INSTRUCTION_TIP + prompts.presets_text()),
                *SAMPLING_INPUTS(),
                MAX_SIDE(),
            ],
            outputs=[io.Image.Output("IMAGE")],
        )

    @classmethod
    def execute(cls, model, image_1, image_2, task, instruction, seed, steps, cfg, img_cfg, max_side):
        n = _check_pair(image_1, image_2)
        pipe = model.pipeline()
        out = pipe.fuse(image_1, image_2, task=task, instruction=instruction, seed=seed, steps=steps, cfg=cfg,
                        img_cfg=img_cfg, max_side=max_side, progress=_progress(n * pipe.sampling(steps)["steps"]))
        return io.NodeOutput(out.to(mm.intermediate_device()))


class DiTFuseControl(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseControl",
            display_name="DiTFuse Control",
            category=CATEGORY,
            description="Text-controlled fusion: fuses the pair and adjusts brightness / contrast (the authors' "
                        "[CONTROL] task); with one image, refines it. Needs the real DiTFuse weights: the bundled "
                        "model only fuses.",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", optional=True, tooltip=IMAGE_2_TIP + PAIR_TIP),
                io.Combo.Input("adjustment", options=list(A.ADJUSTMENTS), default="LIGHT+",
                               tooltip="LIGHT++ / LIGHT+: strong / slight brightening; LIGHT- / LIGHT--: slight / "
                                       "strong darkening; CONTRAST+ / CONTRAST-: more / less contrast."),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip="Replaces the standard requirement (\"Extract and fuse high-quality "
                                        "features from both images.\" + the adjustment's sentence)."),
                *SAMPLING_INPUTS(),
                MAX_SIDE(),
            ],
            outputs=[io.Image.Output("IMAGE")],
        )

    @classmethod
    def execute(cls, model, image_1, adjustment, instruction, seed, steps, cfg, img_cfg, max_side, image_2=None):
        n = _check_pair(image_1, image_2)
        pipe = model.pipeline()
        out = pipe.control(image_1, image_2, adjustment=adjustment, instruction=instruction, seed=seed, steps=steps,
                           cfg=cfg, img_cfg=img_cfg, max_side=max_side,
                           progress=_progress(n * pipe.sampling(steps)["steps"]))
        return io.NodeOutput(out.to(mm.intermediate_device()))


class DiTFuseSegment(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseSegment",
            display_name="DiTFuse Segment",
            category=CATEGORY,
            description="Instruction-following segmentation: fuses the pair and overlays the class in blue (the "
                        "authors' [SEG] task), plus a MASK where the result turned bluer than the inputs' average; "
                        "with one image, segments it. Needs the real DiTFuse weights: the bundled model only fuses "
                        "(its mask is empty).",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", optional=True, tooltip=IMAGE_2_TIP + PAIR_TIP),
                io.String.Input("class_name", default="person",
                                tooltip="What to segment, in plain words: person, car, tree, …"),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip="Appended to \"Segment the <class_name> in the image.\""),
                *SAMPLING_INPUTS(),
                MAX_SIDE(),
            ],
            outputs=[io.Image.Output("overlay"), io.Mask.Output("mask")],
        )

    @classmethod
    def validate_inputs(cls, class_name):
        if not str(class_name).strip():
            return "DiTFuse Segment needs a class name (e.g. 'person')."
        return True

    @classmethod
    def execute(cls, model, image_1, class_name, instruction, seed, steps, cfg, img_cfg, max_side, image_2=None):
        n = _check_pair(image_1, image_2)
        pipe = model.pipeline()
        overlay, mask = pipe.segment(image_1, image_2, class_name=class_name, instruction=instruction, seed=seed,
                                     steps=steps, cfg=cfg, img_cfg=img_cfg, max_side=max_side,
                                     progress=_progress(n * pipe.sampling(steps)["steps"]))
        dev = mm.intermediate_device()
        return io.NodeOutput(overlay.to(dev), mask.float().to(dev))


class DiTFuseEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseEncode",
            display_name="DiTFuse Encode",
            category=CATEGORY,
            description="IMAGE → LATENT in the model's VAE space (SDXL for OmniGen-v1), raw like ComfyUI's VAE "
                        "Encode, so core latent nodes and VAE Decode with the same VAE work on it.",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Image.Input("image"),
                MAX_SIDE(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the VAE posterior sample (item i uses seed + i)."),
            ],
            outputs=[io.Latent.Output("LATENT")],
        )

    @classmethod
    def execute(cls, model, image, max_side, seed):
        A.check_image("image", image)
        pipe = model.pipeline()
        pixels, sizes = pipe.preprocess(image, max_side)
        lats = []
        for i, p in enumerate(pixels):
            _interrupt_check()
            lats.append(pipe.encode_input(p, seed, item=i).float().cpu())
        raw = A.to_comfy_latent(pipe, torch.cat(lats))
        return io.NodeOutput({"samples": raw, "ditfuse_sizes": [list(s) for s in sizes]})


class DiTFuseCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseCondition",
            display_name="DiTFuse Condition",
            category=CATEGORY,
            description="Instruction + images → DITFUSE_CONDITIONING for DiTFuse Sampler. task 'custom' uses the "
                        "instruction as the whole prompt, with <|image_1|> / <|image_2|> tags.",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Image.Input("image_1"),
                io.Image.Input("image_2", optional=True),
                io.Combo.Input("task", options=[*A.TASKS, "custom"], default="ivif"),
                io.String.Input("instruction", default="", multiline=True),
                MAX_SIDE(),
            ],
            outputs=[DiTFuseConditioningType.Output("DITFUSE_CONDITIONING")],
        )

    @classmethod
    def execute(cls, model, image_1, task, instruction, max_side, image_2=None):
        prompt = instruction if task == "custom" else prompts.fusion_prompt(task, instruction)
        images = [image_1, image_2]
        if task == "custom":  # the instruction names the images it uses
            images = images[:prompts.count_images(prompt)]
            if not images:
                raise ValueError("DiTFuse Condition: a custom instruction must name <|image_1|>")
        if any(im is None for im in images):
            raise ValueError(f"DiTFuse Condition: the instruction uses image_2 ('{task}'); connect image_2")
        for k, im in enumerate(images):
            A.check_image(f"image_{k + 1}", im)
        return io.NodeOutput(model.pipeline().conditioning(prompt, images, max_side))


class DiTFuseSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseSampler",
            display_name="DiTFuse Sampler",
            category=CATEGORY,
            description="Flow-matching Euler sampling with three-branch guidance → LATENT. The optional latent "
                        "sets the output size (e.g. DiTFuse Encode → Upscale Latent By); without it the output "
                        "has image 1's prepared size.",
            inputs=[
                DiTFuseModelType.Input("model"),
                DiTFuseConditioningType.Input("conditioning"),
                *SAMPLING_INPUTS(),
                io.Latent.Input("latent", optional=True),
            ],
            outputs=[io.Latent.Output("LATENT")],
        )

    @classmethod
    def execute(cls, model, conditioning, seed, steps, cfg, img_cfg, latent=None):
        pipe = model.pipeline()
        latent_size = None
        sizes = [list(s) for s in conditioning.sizes]
        if latent is not None:
            p = pipe.transformer.config.patch_size
            h, w = latent["samples"].shape[-2:]
            latent_size = (max(p, h // p * p), max(p, w // p * p))
            if latent.get("ditfuse_sizes") is None:
                sizes = None
        lat = pipe.sample_conditioning(conditioning, seed, steps, cfg, img_cfg, latent_size=latent_size,
                                       progress=_progress(len(conditioning) * pipe.sampling(steps)["steps"]))
        lat = lat.float().cpu()
        out = {"samples": A.to_comfy_latent(pipe, lat)}
        if sizes:
            out["ditfuse_sizes"] = sizes
        return io.NodeOutput(out)


class DiTFuseDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseDecode",
            display_name="DiTFuse Decode",
            category=CATEGORY,
            description="LATENT → IMAGE with the model's VAE. restore_size resizes to the input image's original "
                        "size when the latent carries it (from DiTFuse Encode / Sampler).",
            inputs=[
                DiTFuseModelType.Input("model"),
                io.Latent.Input("latent"),
                io.Boolean.Input("restore_size", default=True),
            ],
            outputs=[io.Image.Output("IMAGE")],
        )

    @classmethod
    def execute(cls, model, latent, restore_size):
        pipe = model.pipeline()
        raw = latent["samples"]
        if raw.dim() != 4:
            raise ValueError(f"DiTFuse Decode: expected image latents [B,C,h,w], got {tuple(raw.shape)}")
        frames = []
        for i in range(raw.shape[0]):
            _interrupt_check()
            frames.append(A.decode_raw(pipe, raw[i: i + 1]).cpu())
        pixels = torch.cat(frames)
        sizes = latent.get("ditfuse_sizes") if restore_size else None
        out = A.restore_images(pixels, [tuple(s) for s in sizes] if sizes else None)
        return io.NodeOutput(out.to(mm.intermediate_device()))


class DiTFuseExamplePair(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseExamplePair",
            display_name="DiTFuse Example Pair",
            category=CATEGORY,
            description="A bundled example pair (made from scikit-image photos; see example_images/README.md).",
            inputs=[io.Combo.Input("pair", options=["ivif", "mff", "mef"], default="ivif")],
            outputs=[io.Image.Output("image_1"), io.Image.Output("image_2")],
        )

    @classmethod
    def execute(cls, pair):
        a, b = A.example_pair(pair)
        return io.NodeOutput(a, b)


class DiTFuseMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseMetrics",
            display_name="DiTFuse Metrics",
            category=CATEGORY,
            description="Fusion quality metrics of a fused image against its two sources: a Markdown table and JSON.",
            inputs=[io.Image.Input("image_1"), io.Image.Input("image_2"), io.Image.Input("fused")],
            outputs=[io.String.Output("table"), io.String.Output("json")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image_1, image_2, fused):
        try:
            from ditfuse_core.metrics import metrics_report
        except ImportError as e:
            raise RuntimeError(f"DiTFuse Metrics needs ditfuse_core.metrics.metrics_report ({e})") from e
        from ditfuse_core.pipeline import batch_size

        n = batch_size({"image_1": image_1, "image_2": image_2, "fused": fused})
        tables, reports = [], []
        for i in range(n):
            md, rep = metrics_report(*(A.pick(t, i)[0].cpu().numpy() for t in (image_1, image_2, fused)))
            tables.append(md if n == 1 else f"### item {i}\n\n{md}")
            reports.append(rep)
        table = "\n\n".join(tables)
        js = json.dumps(reports[0] if n == 1 else reports, indent=2, default=float)
        return io.NodeOutput(table, js, ui=ui.PreviewText(table))


NODES = [DiTFuseModelLoader, DiTFuseFuse, DiTFuseControl, DiTFuseSegment, DiTFuseEncode, DiTFuseCondition,
         DiTFuseSampler, DiTFuseDecode, DiTFuseExamplePair, DiTFuseMetrics]


class DiTFuseExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        register_model_folder()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folder()
        return NODES
