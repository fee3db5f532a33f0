"""DiTFuse instructions: task tags, the authors' standard prompts and OmniGen's chat wrapper.

The standard prompts are the authors' (prompt.md §5 in Henry-Lee-real/DiTFuse, MIT), byte for byte: the LoRA was
trained on them, so they are data, not style. Every task takes the image pair (`<|image_1|>`, `<|image_2|>`):
control fuses and adjusts, segmentation fuses and overlays the class in blue; one image is given as both.
"""
from __future__ import annotations

import re

FUSION_SUBTAGS = {
    "ivif": "<MULTI-MODALITIES>",
    "mff": "<MULTI-FOCUS>",
    "mef": "<MULTI-EXPOSURE>",
    "generic": None,  # M3 data: [FUSION] without a subtag
}
FUSION_TASKS = tuple(FUSION_SUBTAGS)
ADJUSTMENTS = ("LIGHT++", "LIGHT+", "LIGHT-", "LIGHT--", "CONTRAST+", "CONTRAST-")

TWO_IMAGES = (
    "This is the first image <img><|image_1|></img>, and this is the second image <img><|image_2|></img>."
)
REQUIREMENT = "Please generate the image based on the following requirements:"
FUSE_BOTH = "Extract and fuse high-quality features from both images."

# What follows the image sentence when the user gives no instruction (prompt.md §5; IVIF's has no
# "based on the following requirements:").
STANDARD_ENDINGS = {
    "ivif": "Please generate a fused image that preserves both the thermal information from the infrared modality "
            "and the texture details from the visible modality.",
    "mff": f"{REQUIREMENT} Detect sharp regions via Laplacian focus measures, create an all-in-focus mask, and "
           "seamlessly blend them to produce a tack-sharp photo from foreground to background without visible "
           "seams.",
    "mef": f"{REQUIREMENT} Merge the well-exposed mid-tones of image 1 with the shadow details of image 2, apply "
           "locally adaptive tone mapping to preserve texture contrast, and ensure natural global luminance.",
    "generic": f"{REQUIREMENT} {FUSE_BOTH}",
}
# The adjustment sentence after FUSE_BOTH. LIGHT+ is the authors' (§5.5); prompt.md spells out no other level,
# so the others are ours, in the same shape, worded after its table (strong/slight increase/decrease).
ADJUSTMENT_SENTENCES = {
    "LIGHT++": "Strongly brighten the critical elements to make them stand out clearly.",
    "LIGHT+": "Slightly brighten the critical elements to make them stand out subtly.",
    "LIGHT-": "Slightly darken the image to tone down its brightness subtly.",
    "LIGHT--": "Strongly darken the image to reduce its brightness clearly.",
    "CONTRAST+": "Increase the contrast to make the critical elements stand out.",
    "CONTRAST-": "Decrease the contrast to give the image a softer, flatter look.",
}
# Instruction presets shown to users: per task the authors' standard requirement first (IVIF's, a whole sentence
# in prompt.md, as the instruction it amounts to), then our variants (prompt.md §6: equivalent wordings drive the
# same behaviour). An empty instruction gives the standard prompt exactly; the M3 generator draws from these.
PRESETS = {
    "ivif": [
        "Preserve both the thermal information from the infrared modality and the texture details from the "
        "visible modality.",
        "Keep the warm targets of the infrared image bright and the scene details of the visible image sharp.",
        "Combine the visible image and the infrared image into one image with salient targets and rich textures.",
    ],
    "mff": [
        STANDARD_ENDINGS["mff"][len(REQUIREMENT) + 1:],
        "Combine the far-focused and near-focused images so that every part of the scene is sharp.",
        "Take the sharp regions of each image to produce one all-in-focus image.",
    ],
    "mef": [
        STANDARD_ENDINGS["mef"][len(REQUIREMENT) + 1:],
        "Combine the two exposures into one image with balanced brightness and details in highlights and shadows.",
        "Merge the bright and dark images into one image with natural exposure and no clipped regions.",
    ],
    "generic": [
        FUSE_BOTH,
        "Fuse the two images into a single clean image, keeping the undamaged content of each.",
        "Combine the two images so that every region comes from the copy where it is clean and sharp.",
    ],
}

# OmniGen's standard negative prompt: the unconditional branch, with no images.
NEGATIVE_PROMPT = (
    "low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly drawn "
    "hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra limbs, "
    "cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra "
    "legs, fused fingers, too many fingers."
)


def wrap(prompt: str) -> str:
    """OmniGen's chat wrapper around every branch prompt."""
    return (
        "<|user|>\nGenerate an image according to the following instructions\n"
        f"{prompt}<|end|>\n<|assistant|>\n<|diffusion|>"
    )


def image_only_prompt(n_images: int) -> str:
    """The image-guidance branch: the input images and nothing else."""
    return " ".join(f"<img><|image_{k}|></img>" for k in range(1, n_images + 1))


def _ending(standard: str, instruction: str) -> str:
    """A user's instruction replaces the standard requirement."""
    instruction = (instruction or "").strip()
    return f"{REQUIREMENT} {instruction}" if instruction else standard


def fusion_task(task: str) -> str:
    t = str(task).strip().lower()
    if t not in FUSION_SUBTAGS:
        raise ValueError(f"unknown fusion task {task!r}; choose one of {', '.join(FUSION_TASKS)}")
    return t


def adjustment_tag(name: str) -> str:
    """'light+', '<LIGHT+>' → 'LIGHT+'."""
    adj = str(name).strip().strip("<>").upper()
    if adj not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {name!r}; choose one of {', '.join(ADJUSTMENTS)}")
    return adj


def fusion_prompt(task: str = "ivif", instruction: str = "") -> str:
    """`[FUSION]. <SUBTAG>. This is the first image … ` for ivif, mff, mef or generic (no subtag)."""
    task = fusion_task(task)
    subtag = FUSION_SUBTAGS[task]
    head = "[FUSION]." + (f" {subtag}." if subtag else "")
    return f"{head} {TWO_IMAGES} {_ending(STANDARD_ENDINGS[task], instruction)}"


def control_prompt(adjustment: str = "LIGHT+", instruction: str = "") -> str:
    """`[CONTROL]. <LIGHT+>. This is the first image … Extract and fuse … Slightly brighten …`."""
    adj = adjustment_tag(adjustment)
    standard = f"{REQUIREMENT} {FUSE_BOTH} {ADJUSTMENT_SENTENCES[adj]}"
    return f"[CONTROL]. <{adj}>. {TWO_IMAGES} {_ending(standard, instruction)}"


def segmentation_prompt(class_name: str, instruction: str = "") -> str:
    """`[SEG]. This is the first image … requirements: Segment the {class} in the image.` (+ instruction)."""
    class_name = str(class_name).strip()
    if not class_name:
        raise ValueError("segmentation needs a class name")
    requirement = f"Segment the {class_name} in the image."
    if instruction and instruction.strip():
        requirement = f"{requirement} {instruction.strip()}"
    return f"[SEG]. {TWO_IMAGES} {REQUIREMENT} {requirement}"


def presets_text() -> str:
    """The presets as plain lines, for tooltips and `--help`."""
    return "\n".join(f"{task}: {p}" for task, ps in PRESETS.items() for p in ps)


def count_images(prompt: str) -> int:
    """Number of distinct `<|image_k|>` tags, which must be 1..k."""
    ids = sorted({int(m) for m in re.findall(r"<\|image_(\d+)\|>", prompt)})
    if ids and ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"image tags must be <|image_1|> … <|image_k|> without gaps, got {ids}")
    return len(ids)
