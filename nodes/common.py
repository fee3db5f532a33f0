"""What every DiTFuse node shares: the socket types, the sampling widgets and their tooltips, progress bars that
honour Cancel, the pair check. Imported only inside ComfyUI."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

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
    """A node's validate_inputs answer from the core's checks (ditfuse_core.validation): True, or the message
    ComfyUI shows at submit. Needed because ComfyUI 0.3.75 does not check V3 combo values, NaN passes its min/max
    check, and an input named in validate_inputs loses ComfyUI's own min/max check. `combos`: {name: (value,
    options)}; None values (linked inputs, not known before the run) are skipped."""
    from ditfuse_core import validation as V

    try:
        for name, (value, options) in (combos or {}).items():
            if value is not None:
                V.check_choice(name, value, list(options))
        V.check_sampling(**values)
    except V.UserError as e:
        return str(e)
    return True


def interrupt_check():
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
