"""M3 training data for DiTFuse: self-supervised fusion pairs, control and segmentation targets.

Everything works on ``uint8`` RGB arrays ``[H, W, 3]`` and a ``numpy.random.Generator``; a sample is a
pure function of ``(seed, index)`` (see :class:`M3Generator`), so data are reproducible without storing
them. Output format (OmniGen's): ``{"instruction", "input_images", "output_image"}``.

Fusion samples (target = the clean image):

* ``m3``  – the DiTFuse "multi-degradation mask" pairs: square blocks of one size per image
  (32/64/128 px), each degraded (random-pixel mask, noise or blur) in exactly one of the two copies;
  optional "both" mode degrades ``max(1, n_blocks // 4)`` blocks in both copies.
* ``mef`` – exposure imbalance: image 1 over-exposed, image 2 under-exposed (with clipping/quantisation).
* ``mff`` – defocus with complementary focus maps: image 1 far-focus (background sharp),
  image 2 near-focus (foreground sharp).
* ``ivif`` – image 1 a visible copy with low light + noise / haze / colour shift in places, image 2 an
  infrared-like copy (gray, remapped or inverted intensities, low texture, "hot" objects).

Control and segmentation samples take an M3 pair of the source as their two inputs, as the authors' do (the
model fuses and adjusts / segments): the target is the source with its brightness (LIGHT++/+/-/--) or contrast
(CONTRAST+/-) changed, or with a translucent blue overlay on a named MSRC class.
"""
from .degradations import (BLOCK_SIZES, BLUR_KERNELS, CONTRAST_GAIN, CONTROL_KINDS, DEGRADATIONS, LIGHT_GAMMA,
                           SEG_ALPHA, SEG_COLOR, Block, add_noise, blur, control_target, degrade_region,
                           exposure_pair, focus_pair, infrared_like, ivif_pair, m3_pair, random_blur, random_pixels,
                           seg_overlay)
from .generator import DEFAULT_MIX, IVIF_GRAY, M3Generator, Sample, random_crop, write_jsonl
from .instructions import (CLASS_WORDS, MSRC_CLASSES, SEG_EXTRAS, fusion_instruction,
                           pick_requirement)
from .sources import Source, data_root, load_gray, load_rgb, scan_sources

__all__ = [
    "BLOCK_SIZES", "BLUR_KERNELS", "CONTRAST_GAIN", "CONTROL_KINDS", "DEGRADATIONS", "LIGHT_GAMMA", "SEG_ALPHA",
    "SEG_COLOR", "Block", "add_noise", "blur", "control_target", "degrade_region", "exposure_pair", "focus_pair",
    "infrared_like", "ivif_pair", "m3_pair", "random_blur", "random_pixels", "seg_overlay", "DEFAULT_MIX",
    "IVIF_GRAY", "M3Generator", "Sample", "random_crop", "write_jsonl", "CLASS_WORDS", "MSRC_CLASSES", "SEG_EXTRAS",
    "fusion_instruction", "pick_requirement", "Source", "data_root",
    "load_gray", "load_rgb", "scan_sources"
]
