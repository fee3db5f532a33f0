"""The composable chain: Encode → Condition → Sampler → Decode, with LATENTs core latent nodes can work on."""
from __future__ import annotations

import torch

import comfy.model_management as mm
from comfy_api.latest import io

from ditfuse_core import prompts

from . import adapters as A
from .common import (CATEGORY, DiTFuseConditioningType, DiTFuseModelType, MAX_SIDE, SAMPLING_INPUTS, interrupt_check,
                     progress_bar, validate)


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
    def validate_inputs(cls, max_side=None):
        return validate(max_side=max_side)

    @classmethod
    def execute(cls, model, image, max_side, seed):
        A.check_image("image", image)
        pipe = model.pipeline()
        pixels, sizes = pipe.preprocess(image, max_side)
        lats = []
        for i, p in enumerate(pixels):
            interrupt_check()
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
    def validate_inputs(cls, task=None, max_side=None):
        return validate({"task": (task, [*A.TASKS, "custom"])}, max_side=max_side)

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
    def validate_inputs(cls, steps=None, cfg=None, img_cfg=None):
        return validate(steps=steps, cfg=cfg, img_cfg=img_cfg)

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
                                       progress=progress_bar())
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
            interrupt_check()
            frames.append(A.decode_raw(pipe, raw[i: i + 1]).cpu())
        pixels = torch.cat(frames)
        sizes = latent.get("ditfuse_sizes") if restore_size else None
        out = A.restore_images(pixels, [tuple(s) for s in sizes] if sizes else None)
        return io.NodeOutput(out.to(mm.intermediate_device()))
