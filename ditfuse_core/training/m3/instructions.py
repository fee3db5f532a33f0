"""M3 instructions: the core's prompt builders and presets (ditfuse_core.prompts), with the M3 task named
"generic" there, and the MSRC class names a user would type."""
from __future__ import annotations

import numpy as np

from ... import prompts
from .degradations import CONTROL_KINDS

MSRC_CLASSES = (
    "building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain", "aeroplane", "water",
    "face", "car", "bicycle", "flower", "sign", "bird", "book", "chair", "road", "cat", "dog", "body",
    "boat",
)
# what a user would type for an MSRC class name
CLASS_WORDS = {"body": "person", "face": "face", "aeroplane": "airplane"}

SEG_EXTRAS = ["", "Mark it with a translucent blue overlay.", "Highlight it in blue."]


def fusion_instruction(task: str, requirement: str = "") -> str:
    return prompts.fusion_prompt("generic" if task == "m3" else task, requirement)


def pick_requirement(task: str, rng: np.random.Generator, p_default: float = 0.5) -> str:
    """Half the time "" (the standard prompt, what the model sees by default), else one of the task's presets.
    Control samples always take the standard prompt (the authors give one wording per level)."""
    if task in CONTROL_KINDS or rng.random() < p_default:
        return ""
    pool = prompts.PRESETS["generic" if task == "m3" else task]
    return pool[int(rng.integers(len(pool)))]
