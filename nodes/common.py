"""What every DiTFuse node shares: the socket types, the sampling widgets and their tooltips, progress bars that
honour Cancel, the pair check. Imported only inside ComfyUI."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from .comfy_api_version import CORE_CHECKS_COMBOS, io

from . import adapters as A

CATEGORY = "DiTFuse"

DiTFuseModelType = io.Custom("DITFUSE_MODEL")
DiTFuseConditioningType = io.Custom("DITFUSE_CONDITIONING")


def progress_bar(node_id=None):
    """A pipeline progress callback: ComfyUI's bar, sized by the first report (steps over all items, as the
    pipeline resolves them), and Cancel within one step."""
    bar = []

    def cb(done: int, total: int):
        mm.throw_exception_if_processing_interrupted()  # raises InterruptProcessingException after Cancel
        if not bar:
            bar.append(comfy.utils.ProgressBar(total, node_id=node_id))
        bar[0].update_absolute(done, total)

    return cb


def check_pair(image_1, image_2) -> int:
    """Batch size of a pair (image_2 may be None), by the core's batch rule."""
    from ditfuse_core.pipeline import batch_size

    A.check_image("image_1", image_1)
    if image_2 is not None:
        A.check_image("image_2", image_2)
    return batch_size({"image_1": image_1, "image_2": image_2})


def validate(combos: dict | None = None, **values) -> bool | str:
    """The core's checks (ditfuse_core.validation) as validate_inputs answers: True or the message ComfyUI shows
    at submit. `combos`: {name: (value, options)}; None values (linked inputs, unknown before the run) are
    skipped."""
    from ditfuse_core import validation as V

    try:
        for name, (value, options) in (combos or {}).items():
            if value is not None:
                V.check_choice(name, value, list(options))
        V.check_sampling(**values)
    except V.UserError as e:
        return str(e)
    return True


def validator(numbers=(), combos: dict | None = None, extra: dict | None = None, context=()):
    """A node's validate_inputs taking exactly the inputs the pack must check itself. ComfyUI repeats a failed
    validate_inputs' message on every input it takes, and skips its own checks (min/max; from 0.7 the combo
    list) for them; so it takes the numbers NaN slips through (cfg, img_cfg, strengths) or whose range ComfyUI
    cannot express (max_side 1…15), the combos only where ComfyUI does not check them (< 0.7), and `extra`
    {name: check(value) → True or a message}. `combos`: {name: options or a function giving them}. `context`:
    names of further inputs taken and passed to every `extra` check as keywords (check(value, **context))."""
    import inspect

    combos = {} if CORE_CHECKS_COMBOS else dict(combos or {})
    extra = dict(extra or {})
    names = [*numbers, *combos, *extra, *(n for n in context if n not in extra)]

    def validate_inputs(cls, **values):
        ctx = {n: values.get(n) for n in context}
        for name, check in extra.items():
            if values.get(name) is not None and (msg := check(values[name], **ctx)) is not True:
                return msg
        options = {k: (values.get(k), o() if callable(o) else o) for k, o in combos.items()}
        return validate(options, **{k: values.get(k) for k in numbers})

    arg = inspect.Parameter.POSITIONAL_OR_KEYWORD
    validate_inputs.__signature__ = inspect.Signature(  # ComfyUI passes only the inputs named here
        [inspect.Parameter("cls", arg)] + [inspect.Parameter(n, arg, default=None) for n in names])
    return classmethod(validate_inputs)


def interrupt_check():
    mm.throw_exception_if_processing_interrupted()


MODEL_DEFAULT = ("the model's own default (its ditfuse.json: OmniGen-v1 + DiTFuse 50 steps, cfg 2.0, img_cfg 1.6; "
                 "the bundled model 2 / 1.0 / 1.0), so one workflow runs either model as intended")
SAMPLING_INPUTS = lambda: [  # noqa: E731
    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                 tooltip="Noise seed; batch item i uses seed + i."),
    io.Int.Input("steps", default=0, min=0, max=1000, tooltip=f"Euler steps. 0 = {MODEL_DEFAULT}."),
    io.Float.Input("cfg", default=-1.0, min=-1.0, max=20.0, step=0.05, round=0.01,
                   tooltip=f"Text guidance: how strongly the instruction steers the result. -1 = {MODEL_DEFAULT}."),
    io.Float.Input("img_cfg", default=-1.0, min=-1.0, max=20.0, step=0.05, round=0.01,
                   tooltip=f"Image guidance: how closely the result follows the input images. -1 = {MODEL_DEFAULT}."),
]
SAMPLING_NUMBERS = ("cfg", "img_cfg")
MODEL_TIP = "The DiTFuse model from DiTFuse Model Loader."
IMAGE_1_TIP = "Image 1: the visible (IVIF), far-focus (MFF) or over-exposed (MEF) image. The result has its size."
IMAGE_2_TIP = ("Image 2: the infrared (IVIF), near-focus (MFF) or under-exposed (MEF) image. Resized to image 1's "
               "working size (a warning in the console when the aspect ratios differ).")
PAIR_TIP = " Optional: without it, image 1 is given as both images (the authors' two-image layout)."
INSTRUCTION_TIP = ("Replaces the standard requirement sentence; empty = the authors' standard prompt for the "
                   "task. Presets (the authors' first, then variants):\n")
LATENT_TIP = ("Raw latents of the model's VAE, like core VAE Encode gives (SDXL's 8x VAE for OmniGen-v1; the "
              "bundled model's linear autoencoder is 4x: core latent nodes that assume 8x get pixel sizes wrong). "
              "Carries the input's original size for DiTFuse Decode.")
MAX_SIDE = lambda: io.Int.Input("max_side", default=0, min=0, max=4096, step=16,  # noqa: E731
                                tooltip="Inputs are resized so the longest side is this (multiple of 16). 0: the "
                                        "model's own working size (OmniGen-v1: 1024; the bundled model: 1024 and "
                                        "at least 2x enlarged, up to 2048 px, slower on large images). The "
                                        "output is restored to image 1's original size.")
