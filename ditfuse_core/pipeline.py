"""DiTFusePipeline: images → latents → three-branch sequences → flow sampler → images."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import checkpoint, image_input, images as imgs, lora as lora_mod, prompts, sampler, validation, vae as vae_mod
from .devices import resolve_device, resolve_model_dtype, resolve_vae_dtype
from .sequence import build_branch
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)

BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "ditfuse-tiny"
MAX_STEPS = validation.MAX_STEPS
AUTHORS_DEFAULTS = {"steps": 50, "cfg": 2.0, "img_cfg": 1.6, "max_side": 1024}


def model_folder(model: str | Path | None) -> Path:
    """A model argument's folder: None (or "") means the bundled model."""
    return Path(model) if model else BUNDLED_MODEL


def resolve_dtypes(model: str | Path | None, device: str | torch.device, dtype: str | torch.dtype = "auto",
                   vae_dtype: str | torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype]:
    """(transformer, VAE) dtypes of a model on a device, "auto" resolved: the model's own precision
    (ditfuse.json), else the device's. vae_dtype None: as dtype. The ComfyUI loader resolves them for the GPU
    it runs on while it loads onto the offload device."""
    dev = resolve_device(device)
    precision = checkpoint.model_meta(model_folder(model)).get("precision")
    return (resolve_model_dtype(dtype, dev, precision),
            resolve_vae_dtype(dtype if vae_dtype is None else vae_dtype, dev))


@dataclass
class Conditioning:
    """An instruction and its prepared input images, per batch item: what sampling is conditioned on (the
    ComfyUI DITFUSE_CONDITIONING). Images are VAE-encoded at sampling time, from seed-derived streams."""

    prompt: str
    pixels: list[list[torch.Tensor]]  # per item: one [1,3,h,w] in [-1,1] per <|image_k|>
    sizes: list[tuple[int, int]]      # per item: image 1's original (W, H)

    def __len__(self) -> int:
        return len(self.pixels)


def batch_size(named: dict) -> int:
    """The batch rule of every entry point: equal batches pair up item by item, a batch of 1 is used with every
    item of the others, anything else is an error naming each input's size. None entries are ignored."""
    sizes = {k: _count(v) for k, v in named.items() if v is not None}
    n = max(sizes.values())
    if any(s not in (1, n) for s in sizes.values()):
        desc = ", ".join(f"{k} has {s}" for k, s in sizes.items())
        raise ValueError(f"batch sizes do not match ({desc}): batches must be equal or 1 (a single image is used "
                         "with every item of the others)")
    return n


def _count(images) -> int:
    if isinstance(images, torch.Tensor):
        return int(images.shape[0]) if images.dim() == 4 else 1
    return len(images) if isinstance(images, (list, tuple)) else 1


class DiTFusePipeline:
    def __init__(self, transformer, vae, tokenizer, defaults: dict | None = None, name: str = "model"):
        self.transformer = transformer
        self.vae = vae
        self.tokenizer = tokenizer
        self.defaults = {**AUTHORS_DEFAULTS, **(defaults or {})}
        self.name = name
        self.vae_factor = vae_mod.downsample_factor(vae)
        # One token per (vae factor × patch) pixels square: 16 for OmniGen (8 × 2).
        self.token_pixels = self.vae_factor * transformer.config.patch_size
        # the position table covers pos_embed_max_size tokens per side: larger requests are clamped to it
        self.largest_side = int(transformer.config.pos_embed_max_size) * self.token_pixels
        # engine options a caller sets for every call (the ComfyUI pack: offload "layers" + kv_cache "cpu" under
        # --lowvram / --novram); used by `sample` when a call leaves offload "none" and kv_cache None.
        self.engine: dict = {}

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, lora: str | Path | None = None,
                        lora_strength: float = 1.0, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "auto",
                        vae_dtype: str | torch.dtype | None = None,
                        weights: str | torch.dtype | None = "auto") -> DiTFusePipeline:
        """vae_dtype None: as dtype, except that "auto" on a CPU with native bf16 runs the VAE in bf16.
        weights: storage of the blocks' projections (weight_storage): "auto" = dtype; "fp8" halves the
        transformer's memory against bf16, compute stays in dtype."""
        folder = model_folder(model)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        dev = resolve_device(device)
        dt, vae_dt = resolve_dtypes(folder, dev, dtype, vae_dtype)
        transformer = checkpoint.load_transformer(folder, dt, dev, weights)
        vae = vae_mod.load_vae(checkpoint.vae_folder(folder), vae_dt, dev)
        defaults = checkpoint.model_meta(folder).get("defaults", {})
        pipe = cls(transformer, vae, load_tokenizer(folder), defaults, name=folder.name)
        if lora:
            pipe.load_lora(lora, lora_strength)
        return pipe

    @property
    def device(self) -> torch.device:
        return self.transformer.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def load_lora(self, path, strength: float = 1.0) -> None:
        lora_mod.load_lora(self.transformer, path, strength)

    def set_lora_strength(self, strength: float) -> None:
        lora_mod.set_strength(self.transformer, strength)

    # ---- stages --------------------------------------------------------------------------------------
    def working_side(self, size: tuple[int, int], max_side: int | None = None,
                     min_scale: float | None = None) -> int:
        """Longest side the inputs are resized to: max_side (the authors' rule), raised to min_scale × image
        1's longest side, never above the position table. Without max_side (None or 0) both come from the
        model's defaults (the bundled model's "min_scale" 2: its linear autoencoder is nearly lossless only on
        enlarged copies); an explicit max_side is taken as asked, with min_scale only if given too."""
        validation.check_sampling(max_side=max_side, min_scale=min_scale)
        if min_scale is None and not max_side:
            min_scale = self.defaults.get("min_scale")
        side = min(int(max_side or self.defaults["max_side"]), self.largest_side)
        if min_scale:
            side = max(side, min(int(float(min_scale) * max(size)), self.largest_side))
        return side

    def preprocess(self, images, max_side: int | None = None, min_scale: float | None = None, same_size=False):
        """Images → (list of [1,3,h,w] in [-1,1], list of original (W,H)), all at one working side.

        same_size (the images of one sample): every image goes to the first one's working size, so their tokens
        line up; a warning names both sizes when the aspect ratios differ (the second image is then
        stretched to the first one's frame) — not when one is a scaled copy of the other (IR / visible at two
        resolutions is usual)."""
        pils = image_input.to_pil_list(images)
        side = self.working_side(pils[0].size, max_side, min_scale)
        size = imgs.prepared_size(pils[0].size, side, self.token_pixels) if same_size else None
        for k, p in enumerate(pils[1:] if same_size else [], start=2):
            (w1, h1), (w, h) = pils[0].size, p.size
            if abs(w * h1 - w1 * h) > 0.01 * w1 * h:
                log.warning("image %d is %d×%d but image 1 is %d×%d: image %d is resized to image 1's frame "
                            "(aspect ratio changed); crop or pad the inputs to line them up", k, w, h, w1, h1, k)
        return [imgs.prepare(p, side, self.token_pixels, size) for p in pils], [p.size for p in pils]

    def encode(self, pixels: torch.Tensor, seed: int | None = 0, sample: bool = True) -> torch.Tensor:
        return vae_mod.encode(self.vae, pixels, seed, sample)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_mod.decode(self.vae, latents)

    def encode_input(self, pixels: torch.Tensor, seed: int = 0, item: int = 0, image: int = 0) -> torch.Tensor:
        """Input image `image` of batch item `item`, encoded as sampling does it: a posterior sample from its own
        stream of seed + item (so an item's result does not depend on the batch it is in)."""
        return self.encode(pixels, seed=encode_seed(seed + item, image))

    def conditioning(self, prompt: str, images: list, max_side: int | None = None,
                     min_scale: float | None = None) -> Conditioning:
        """`images` has one entry per `<|image_k|>` of the prompt, each a single image or a batch (PIL list or
        [B,H,W,C] tensor); batches follow `batch_size`. Every item is prepared at image 1's working side."""
        n_tags = prompts.count_images(prompt)
        if n_tags != len(images):
            raise ValueError(f"the instruction names {n_tags} images but {len(images)} were given")
        n = batch_size({f"image_{k + 1}": im for k, im in enumerate(images)}) if images else 1
        groups = [image_input.to_pil_list(x) for x in images]
        pixels, sizes = [], []
        for i in range(n):
            pix, sz = self.preprocess([g[min(i, len(g) - 1)] for g in groups], max_side, min_scale, same_size=True)
            pixels.append(pix)
            sizes.append(sz[0] if sz else None)
        return Conditioning(prompt, pixels, sizes)

    def branches(self, prompt: str, image_latents: list[torch.Tensor]) -> sampler.Branches:
        """The three guidance branches of one sample: the instruction with its images, OmniGen's negative
        prompt without images, and the images alone."""
        n = prompts.count_images(prompt)
        if n != len(image_latents):
            raise ValueError(f"the instruction names {n} images but {len(image_latents)} were given")
        p = self.transformer.config.patch_size
        counts = [(lat.shape[-2] // p) * (lat.shape[-1] // p) for lat in image_latents]
        tok = self.tokenizer
        uncond = build_branch(tok, prompts.wrap(prompts.NEGATIVE_PROMPT), [])
        return sampler.Branches(
            cond=build_branch(tok, prompts.wrap(prompt), counts),
            uncond=uncond,
            img=build_branch(tok, prompts.wrap(prompts.image_only_prompt(n)), counts) if n else uncond,
            image_latents=[lat.to(self.device) for lat in image_latents],
        )

    def sample(self, branches, seed: int = 0, steps: int | None = None, cfg: float | None = None,
               img_cfg: float | None = None, latent_size: tuple[int, int] | None = None,
               progress: Callable[[int, int], None] | None = None, use_cache: bool = True,
               batch_branches: bool | str = "auto", kv_cache: str | None = None,
               offload: str = "none") -> torch.Tensor:
        """Sample latents for one sample's Branches or a list (one per sample; item i uses seed + i).
        latent_size (h, w) defaults to the first input image's latent size.

        Engine options, for speed or for a GPU with little memory (see `sampler.sample`; the same latents
        whatever they are, except kv_cache "fp8", which is close):
            batch_branches: "auto" (batched unless the GPU lacks free memory), True, or False (one guidance
                branch at a time: least activation memory).
            kv_cache: "device", "fp8" (half of bf16's cache memory) or "cpu"; None: "cpu" when offloading.
            offload: "none", "kv_cpu" (the KV cache on the CPU) or "layers" (also the transformer blocks on
                the CPU, each moved to the GPU just in time: OmniGen-v1 at 1024² in ≤ 6 GB of VRAM, slower;
                the blocks stay on the CPU after the call)."""
        if isinstance(branches, sampler.Branches):
            branches = [branches]
        if latent_size is None:
            if not branches[0].image_latents:
                raise ValueError("latent_size is needed when there are no input images")
            latent_size = tuple(branches[0].image_latents[0].shape[-2:])
        p = self.transformer.config.patch_size
        if latent_size[0] % p or latent_size[1] % p:
            raise ValueError(f"latent size {latent_size} must be a multiple of the patch size {p}")
        if max(latent_size) * self.vae_factor > self.largest_side:
            h, w = (x * self.vae_factor for x in latent_size)
            raise ValueError(f"an output of {w}×{h} px is larger than {self.name} supports ({self.largest_side} px "
                             "per side, its position table); use a smaller latent or max_side")
        if offload == "none" and kv_cache is None and self.engine:
            kv_cache, offload = self.engine.get("kv_cache"), self.engine.get("offload", "none")
        noise = sampler.initial_noise(seed, len(branches), (self.transformer.config.in_channels, *latent_size))
        return sampler.sample(self.transformer, branches, noise, **self.sampling(steps, cfg, img_cfg),
                              use_cache=use_cache, batch_branches=batch_branches, progress=progress,
                              kv_cache=kv_cache, offload=offload)

    def sampling(self, steps: int | None = None, cfg: float | None = None,
                 img_cfg: float | None = None) -> dict:
        """Sampling settings with "model default" resolved: steps None or 0, cfg / img_cfg None or negative
        take the model folder's own (ditfuse.json; OmniGen-v1 + DiTFuse: the authors' 50 / 2.0 / 1.6). The one
        rule for the library, the CLI and the nodes."""
        validation.check_sampling(steps=steps, cfg=cfg, img_cfg=img_cfg)
        steps = self.defaults["steps"] if steps is None or int(steps) == 0 else int(steps)
        cfg = self.defaults["cfg"] if cfg is None or cfg < 0 else cfg
        img_cfg = self.defaults["img_cfg"] if img_cfg is None or img_cfg < 0 else img_cfg
        return {"steps": int(steps), "cfg": float(cfg), "img_cfg": float(img_cfg)}

    def sample_conditioning(self, conditioning: Conditioning, seed: int = 0, steps: int | None = None,
                            cfg: float | None = None, img_cfg: float | None = None,
                            latent_size: tuple[int, int] | None = None,
                            progress: Callable[[int, int], None] | None = None, **engine) -> torch.Tensor:
        """Scaled latents [B,C,h,w], one per item. Item i encodes its images and samples with seeds derived
        from seed + i, so its result does not depend on the batch it is in; progress counts steps over all
        items. engine: batch_branches, kv_cache, offload, as in `sample`."""
        n = len(conditioning)
        per_item = self.sampling(steps)["steps"]
        out = []
        for i, pix in enumerate(conditioning.pixels):
            lats = [self.encode_input(p, seed, item=i, image=k) for k, p in enumerate(pix)]
            cb = None if progress is None else (lambda s, _t, d=i * per_item: progress(d + s, n * per_item))
            out.append(self.sample(self.branches(conditioning.prompt, lats), seed=seed + i, steps=steps, cfg=cfg,
                                   img_cfg=img_cfg, latent_size=latent_size, progress=cb, **engine))
        return torch.cat(out)

    # ---- tasks ---------------------------------------------------------------------------------------
    def generate(self, instruction: str, images: list, seed: int = 0, steps: int | None = None,
                 cfg: float | None = None, img_cfg: float | None = None, max_side: int | None = None,
                 min_scale: float | None = None, progress: Callable[[int, int], None] | None = None, **engine):
        """Run one instruction over batches of inputs. `images` is a list with one entry per `<|image_k|>`;
        each entry is a single image or a batch (PIL list or [B,H,W,C] tensor). Batches of 1 broadcast.
        Returns a list of PIL images (PIL input) or a [B,H,W,3] tensor (tensor input), at image 1's
        original size. engine: batch_branches, kv_cache, offload, as in `sample`."""
        sampler.engine_options(**engine)  # refuse bad values before any image work
        self.sampling(steps, cfg, img_cfg)  # refuse bad values before any image work
        as_tensor = any(isinstance(x, torch.Tensor) for x in images)
        cond = self.conditioning(instruction, images, max_side, min_scale)
        latents = self.sample_conditioning(cond, seed=seed, steps=steps, cfg=cfg, img_cfg=img_cfg,
                                           progress=progress, **engine)
        outputs = [imgs.restore(self.decode(latents[i : i + 1]), cond.sizes[i]) for i in range(len(cond))]
        if as_tensor:
            if len({tuple(o.shape) for o in outputs}) != 1:
                return outputs
            return torch.cat(outputs)
        return [p for o in outputs for p in imgs.to_pil(o)]

    def fuse(self, image1, image2, task: str = "ivif", instruction: str = "", *, seed: int = 0,
             steps: int | None = None, cfg: float | None = None, img_cfg: float | None = None,
             max_side: int | None = None, min_scale: float | None = None,
             progress: Callable[[int, int], None] | None = None, batch_branches: bool | str = "auto",
             kv_cache: str | None = None, offload: str = "none"):
        """Fuse image pairs under the task's standard prompt (or `instruction` as its requirement).

        Args:
            image1: visible / far-focus / over-exposed image(s): PIL, list of PIL or [B,H,W,C] tensor.
            image2: infrared / near-focus / under-exposed image(s); a batch of 1 is used with every item.
            task: "ivif", "mff", "mef" or "generic".
            instruction: replaces the standard requirement sentence when not empty.
            seed: noise seed; item i uses seed + i.
            steps, cfg, img_cfg: None (or 0 / negative) for the model's own defaults.
            max_side, min_scale: working size (see `working_side`).
            progress: called with (steps done, total) over the whole batch, from (0, total) before any work.
            batch_branches, kv_cache, offload: engine options for speed or little GPU memory (see `sample`).
        Returns:
            PIL list (PIL input) or [B,H,W,3] tensor, at image 1's original size.
        """
        return self.generate(prompts.fusion_prompt(task, instruction), [image1, image2], seed=seed, steps=steps,
                             cfg=cfg, img_cfg=img_cfg, max_side=max_side, min_scale=min_scale, progress=progress,
                             batch_branches=batch_branches, kv_cache=kv_cache, offload=offload)

    def control(self, image1, image2=None, adjustment: str = "LIGHT+", instruction: str = "", *, seed: int = 0,
                steps: int | None = None, cfg: float | None = None, img_cfg: float | None = None,
                max_side: int | None = None, min_scale: float | None = None,
                progress: Callable[[int, int], None] | None = None, **engine):
        """Fuse the pair and adjust brightness / contrast (the authors' `[CONTROL]` task).

        Args:
            image1, image2: as in `fuse`; without image2, image 1 is given as both images (single-image
                refinement in the authors' two-image layout).
            adjustment: LIGHT++, LIGHT+, LIGHT-, LIGHT--, CONTRAST+ or CONTRAST-.
            instruction, seed, steps, cfg, img_cfg, max_side, min_scale, progress, engine: as in `fuse`.
        """
        return self.generate(prompts.control_prompt(adjustment, instruction), _pair(image1, image2), seed=seed,
                             steps=steps, cfg=cfg, img_cfg=img_cfg, max_side=max_side, min_scale=min_scale,
                             progress=progress, **engine)

    def segment(self, image1, image2=None, class_name: str = "person", instruction: str = "", *,
                threshold: float = 0.12, seed: int = 0, steps: int | None = None, cfg: float | None = None,
                img_cfg: float | None = None, max_side: int | None = None, min_scale: float | None = None,
                progress: Callable[[int, int], None] | None = None, **engine):
        """Fuse the pair and lay the class over it in translucent blue (the authors' `[SEG]` task).

        Args:
            image1, image2: as in `control`.
            class_name: what to segment ("person", "tree", …).
            threshold: blueness increase that counts as the class.
            instruction, seed, steps, cfg, img_cfg, max_side, min_scale, progress, engine: as in `fuse`.
        Returns:
            (overlay, mask): the overlay as `fuse` returns it; masks [B,H,W] float, 1 = class, where the output
            is bluer than the plain average of the two inputs (the fused content without the overlay).
        """
        images = _pair(image1, image2)
        overlay = self.generate(prompts.segmentation_prompt(class_name, instruction), images, seed=seed,
                                steps=steps, cfg=cfg, img_cfg=img_cfg, max_side=max_side, min_scale=min_scale,
                                progress=progress, **engine)
        outs = image_input.to_pil_list(overlay)
        firsts, seconds = (image_input.to_pil_list(x) for x in images)
        masks = []
        for i, out in enumerate(outs):
            a, b = firsts[min(i, len(firsts) - 1)], seconds[min(i, len(seconds) - 1)]
            base = (imgs.to_tensor(a) + imgs.to_tensor(b.resize(a.size, Image.BILINEAR))) / 2
            masks.append((blue_mask(imgs.to_tensor(out), base) > threshold).float())
        return overlay, torch.stack(masks)


def _pair(image1, image2) -> list:
    return [image1, image1 if image2 is None else image2]


def blue_mask(output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Increase of blueness (B − max(R, G)) from source to output, [H,W] from [H,W,3] floats in 0..1."""
    def blueness(x):
        return x[..., 2] - torch.maximum(x[..., 0], x[..., 1])

    return blueness(output) - blueness(source)


def encode_seed(seed: int, k: int) -> int:
    """A stream for posterior sampling of input k that never coincides with the initial-noise stream."""
    return (int(seed) * 1_000_003 + 7_919 * (k + 1)) % (2**63)
