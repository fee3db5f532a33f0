"""DiTFuse instructions: task tags, subtags and the OmniGen chat wrapper.

The model was trained on exactly these strings, so they are data, not style: change nothing here without
retraining.
"""
from __future__ import annotations

TASKS = ("[FUSION]", "[CONTROL]", "[SEG]")
FUSION_SUBTAGS = {
    "ivif": "<MULTI-MODALITIES>",
    "mff": "<MULTI-FOCUS>",
    "mef": "<MULTI-EXPOSURE>",
    "generic": None,
}
CONTROL_SUBTAGS = ("LIGHT++", "LIGHT+", "LIGHT-", "LIGHT--", "CONTRAST+", "CONTRAST-")

TWO_IMAGES = (
    "This is the first image <img><|image_1|></img>, and this is the second image <img><|image_2|></img>."
)
ONE_IMAGE = "This is the image <img><|image_1|></img>."
REQUIREMENT = "Please generate the image based on the following requirements:"

DEFAULT_REQUIREMENTS = {
    "ivif": "fuse the infrared and visible images, keeping the thermal targets of the infrared image and the "
    "textures and details of the visible image.",
    "mff": "fuse the two images into one all-in-focus image that keeps the sharp regions of both.",
    "mef": "fuse the two exposures into one well-exposed image with details in both shadows and highlights.",
    "generic": "fuse the two images into one image that keeps the useful information of both.",
}
CONTROL_REQUIREMENTS = {
    "LIGHT++": "make the image much brighter.",
    "LIGHT+": "make the image brighter.",
    "LIGHT-": "make the image darker.",
    "LIGHT--": "make the image much darker.",
    "CONTRAST+": "increase the contrast of the image.",
    "CONTRAST-": "decrease the contrast of the image.",
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


def _sentence(head: str, body: str, requirement: str) -> str:
    return f"{head} {body} {REQUIREMENT} {requirement.strip()}"


def _requirement(default: str, instruction: str) -> str:
    instruction = (instruction or "").strip()
    return instruction if instruction else default


def fusion_prompt(task: str = "ivif", instruction: str = "") -> str:
    """`[FUSION]. <SUBTAG>. This is the first image … requirements: …` for ivif, mff, mef or generic."""
    task = task.lower()
    if task not in FUSION_SUBTAGS:
        raise ValueError(f"unknown fusion task {task!r}; choose one of {', '.join(FUSION_SUBTAGS)}")
    subtag = FUSION_SUBTAGS[task]
    head = "[FUSION]." + (f" {subtag}." if subtag else "")
    return _sentence(head, TWO_IMAGES, _requirement(DEFAULT_REQUIREMENTS[task], instruction))


def control_prompt(adjustment: str = "LIGHT+", instruction: str = "") -> str:
    """`[CONTROL]. <LIGHT+>. This is the image … requirements: …`."""
    adj = adjustment.strip().strip("<>").upper()
    if adj not in CONTROL_SUBTAGS:
        raise ValueError(f"unknown adjustment {adjustment!r}; choose one of {', '.join(CONTROL_SUBTAGS)}")
    return _sentence(f"[CONTROL]. <{adj}>.", ONE_IMAGE, _requirement(CONTROL_REQUIREMENTS[adj], instruction))


def segmentation_prompt(class_name: str, instruction: str = "") -> str:
    """`[SEG]. This is the image … requirements: Segment the {class} in the image.`"""
    class_name = class_name.strip()
    if not class_name:
        raise ValueError("segmentation needs a class name")
    requirement = f"Segment the {class_name} in the image."
    if instruction and instruction.strip():
        requirement = f"{requirement} {instruction.strip()}"
    return _sentence("[SEG].", ONE_IMAGE, requirement)


def count_images(prompt: str) -> int:
    """Number of distinct `<|image_k|>` tags, which must be 1..k."""
    import re

    ids = sorted({int(m) for m in re.findall(r"<\|image_(\d+)\|>", prompt)})
    if ids and ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"image tags must be <|image_1|> … <|image_k|> without gaps, got {ids}")
    return len(ids)
