"""One-node tasks: Fuse, Control and Segment (the authors' [FUSION], [CONTROL] and [SEG])."""
from __future__ import annotations

import comfy.model_management as mm
from .comfy_api_version import io

from ditfuse_core import prompts

from . import adapters as A
from .common import (CATEGORY, DiTFuseModelType, IMAGE_1_TIP, IMAGE_2_TIP, INSTRUCTION_TIP, MAX_SIDE, MODEL_TIP,
                     PAIR_TIP, SAMPLING_INPUTS, SAMPLING_NUMBERS, check_pair, progress_bar, validator)


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
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", tooltip=IMAGE_2_TIP),
                io.Combo.Input("task", options=list(A.TASKS), default="ivif",
                               tooltip="ivif: infrared + visible; mff: multi-focus; mef: multi-exposure; generic: "
                                       "any two images (the M3 prompt). Picks the authors' standard prompt."),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip=INSTRUCTION_TIP + prompts.presets_text()),
                *SAMPLING_INPUTS(),
                MAX_SIDE(),
            ],
            outputs=[io.Image.Output("IMAGE", display_name="fused image",
                                     tooltip="The fusion, at image 1's original size.")],
        )

    validate_inputs = validator((*SAMPLING_NUMBERS, "max_side"), {"task": A.TASKS})

    @classmethod
    def execute(cls, model, image_1, image_2, task, instruction, seed, steps, cfg, img_cfg, max_side):
        check_pair(image_1, image_2)
        pipe = model.pipeline(model.sampling_memory(image_1, max_side, cfg, img_cfg))
        out = pipe.fuse(image_1, image_2, task=task, instruction=instruction, seed=seed, steps=steps, cfg=cfg,
                        img_cfg=img_cfg, max_side=max_side, progress=progress_bar())
        return io.NodeOutput(out.to(mm.intermediate_device()))


class DiTFuseControl(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseControl",
            display_name="DiTFuse Control",
            category=CATEGORY,
            description="Text-controlled fusion: fuses the pair and adjusts brightness / contrast (the authors' "
                        "[CONTROL] task); with one image, refines it. The bundled model applies fixed amounts "
                        "(brightness offset, contrast gain: its model card); the real DiTFuse weights follow the "
                        "instruction.",
            inputs=[
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
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
            outputs=[io.Image.Output("IMAGE", display_name="adjusted image",
                                     tooltip="The fusion with the adjustment applied, at image 1's original size.")],
        )

    validate_inputs = validator((*SAMPLING_NUMBERS, "max_side"), {"adjustment": A.ADJUSTMENTS})

    @classmethod
    def execute(cls, model, image_1, adjustment, instruction, seed, steps, cfg, img_cfg, max_side, image_2=None):
        check_pair(image_1, image_2)
        pipe = model.pipeline(model.sampling_memory(image_1, max_side, cfg, img_cfg))
        out = pipe.control(image_1, image_2, adjustment=adjustment, instruction=instruction, seed=seed, steps=steps,
                           cfg=cfg, img_cfg=img_cfg, max_side=max_side,
                           progress=progress_bar())
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
                        "with one image, segments it. Needs the real DiTFuse weights: the bundled model fuses "
                        "without an overlay (its mask is empty).",
            inputs=[
                DiTFuseModelType.Input("model", tooltip=MODEL_TIP),
                io.Image.Input("image_1", tooltip=IMAGE_1_TIP),
                io.Image.Input("image_2", optional=True, tooltip=IMAGE_2_TIP + PAIR_TIP),
                io.String.Input("class_name", default="person",
                                tooltip="What to segment, in plain words: person, car, tree, …"),
                io.String.Input("instruction", default="", multiline=True,
                                tooltip="Appended to \"Segment the <class_name> in the image.\""),
                *SAMPLING_INPUTS(),
                MAX_SIDE(),
            ],
            outputs=[io.Image.Output("overlay", display_name="overlay",
                                     tooltip="The fusion with the class laid over it in translucent blue."),
                     io.Mask.Output("mask", display_name="mask",
                                    tooltip="1 where the overlay turned bluer than the inputs' average (the class).")],
        )

    validate_inputs = validator((*SAMPLING_NUMBERS, "max_side"), extra={
        "class_name": lambda v: True if str(v).strip() else "DiTFuse Segment needs a class name (e.g. 'person')."})

    @classmethod
    def execute(cls, model, image_1, class_name, instruction, seed, steps, cfg, img_cfg, max_side, image_2=None):
        check_pair(image_1, image_2)
        pipe = model.pipeline(model.sampling_memory(image_1, max_side, cfg, img_cfg))
        overlay, mask = pipe.segment(image_1, image_2, class_name=class_name, instruction=instruction, seed=seed,
                                     steps=steps, cfg=cfg, img_cfg=img_cfg, max_side=max_side,
                                     progress=progress_bar())
        dev = mm.intermediate_device()
        return io.NodeOutput(overlay.to(dev), mask.float().to(dev))
