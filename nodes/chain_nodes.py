"""The composable chain: Encode → Condition → Sampler → Decode, with LATENTs core latent nodes can work on."""
from __future__ import annotations

import torch

import comfy.model_management as mm
from .comfy_api_version import io

from ditfuse_core import prompts

from . import adapters as A
from .common import (CATEGORY, IMAGE_1_TIP, IMAGE_2_TIP, INSTRUCTION_TIP, LATENT_TIP, MAX_SIDE, MODEL_TIP,
                     SAMPLING_INPUTS, SAMPLING_NUMBERS, DiTFuseConditioningType, DiTFuseModelType, interrupt_check,
                     progress_bar, validator)


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
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                io.Image.Input("image", tooltip="The image (or batch) to encode at the model's working size."),
                MAX_SIDE(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the VAE posterior sample (item i uses seed + i)."),
            ],
            outputs=[io.Latent.Output("LATENT", display_name="latent", tooltip=LATENT_TIP)],
        )

    validate_inputs = validator(("max_side",))

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
        return io.NodeOutput(A.latent_dict(pipe, raw, sizes, raw.shape[-2:]))


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
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", optional=True, tooltip=IMAGE_2_TIP + " Optional for a custom instruction "
                               "that names only <|image_1|>."),
                io.Combo.Input("task", options=[*A.TASKS, "custom"], default="ivif",
                               tooltip="The authors' standard prompt of a task (ivif, mff, mef, generic), or custom: "
                                       "the instruction is the whole prompt, with <|image_1|> / <|image_2|> tags."),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip=INSTRUCTION_TIP + prompts.presets_text()),
                MAX_SIDE(),
            ],
            outputs=[DiTFuseConditioningType.Output("DITFUSE_CONDITIONING", display_name="conditioning",
                                                    tooltip="The prompt and the prepared images, for DiTFuse "
                                                            "Sampler.")],
        )

    validate_inputs = validator(("max_side",), {"task": (*A.TASKS, "custom")})

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
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                DiTFuseConditioningType.Input("conditioning", tooltip="From DiTFuse Condition."),
                *SAMPLING_INPUTS(),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional: its size sets the output size (e.g. DiTFuse Encode → Upscale "
                                        "Latent By); its values are not used."),
            ],
            outputs=[io.Latent.Output("LATENT", display_name="latent", tooltip=LATENT_TIP)],
        )

    validate_inputs = validator(SAMPLING_NUMBERS)

    @classmethod
    def execute(cls, model, conditioning, seed, steps, cfg, img_cfg, latent=None):
        from ditfuse_core.memory import pipeline_sampling_bytes

        h, w = conditioning.pixels[0][0].shape[-2:]
        if latent is not None:  # the output takes the latent's size
            f = model.pipe.vae_factor
            h, w = latent["samples"].shape[-2] * f, latent["samples"].shape[-1] * f
        pipe = model.pipeline(pipeline_sampling_bytes(model.pipe, h, w, len(conditioning.pixels[0]), cfg, img_cfg))
        latent_size = None
        if latent is not None:
            p = pipe.transformer.config.patch_size
            h, w = latent["samples"].shape[-2:]
            latent_size = (max(p, h // p * p), max(p, w // p * p))
        lat = pipe.sample_conditioning(conditioning, seed, steps, cfg, img_cfg, latent_size=latent_size,
                                       progress=progress_bar())
        working = conditioning.pixels[0][0].shape[-2:]
        f = pipe.vae_factor
        return io.NodeOutput(A.latent_dict(pipe, A.to_comfy_latent(pipe, lat.float().cpu()), conditioning.sizes,
                                           (working[0] // f, working[1] // f)))


class DiTFuseDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseDecode",
            display_name="DiTFuse Decode",
            category=CATEGORY,
            description="LATENT → IMAGE with the model's VAE. restore_size gives back image 1's original size when "
                        "the latent is at the working size DiTFuse made it at; a latent whose size a node changed "
                        "(Upscale Latent, crop, …) is decoded at its own size.",
            inputs=[
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                io.Latent.Input("latent", tooltip=LATENT_TIP),
                io.Boolean.Input("restore_size", default=True,
                                 tooltip="On: resize to image 1's original size, when the latent still has the size "
                                         "DiTFuse Encode / Sampler gave it. Off: the working size (latent size × "
                                         "the VAE's factor)."),
            ],
            outputs=[io.Image.Output("IMAGE", display_name="image")],
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
        sizes = A.restorable_sizes(latent) if restore_size else None
        out = A.restore_images(pixels, sizes)
        return io.NodeOutput(out.to(mm.intermediate_device()))
