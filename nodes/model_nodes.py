"""The model: its folder (models/ditfuse via folder_paths), the object ComfyUI's memory manager loads, and
the Model Loader node."""
from __future__ import annotations

import logging
import os

import torch

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
from ditfuse_core.weight_storage import WEIGHTS

from . import adapters as A
from .comfy_api_version import CORE_CHECKS_COMBOS, io
from .common import CATEGORY, DiTFuseModelType, validator

log = logging.getLogger("ditfuse")


# ---- model folder ----------------------------------------------------------------------------------------
def register_model_folder() -> None:
    """models/ditfuse under ComfyUI's models dir, added (never assigned: that would drop the user's
    extra_model_paths.yaml `ditfuse:` entries), first in the list like core's own model folders, unless a yaml
    section with `is_default: true` names a `ditfuse:` folder: that one stays first, as it does for core's keys
    (the yaml is read before custom nodes load). The first folder is where download_if_missing downloads."""
    folder_paths.add_model_folder_path(A.FOLDER_KEY, os.path.join(folder_paths.models_dir, A.FOLDER_KEY),
                                       is_default=not _yaml_sets_default_ditfuse())


def _yaml_sets_default_ditfuse() -> bool:
    """Whether an extra_model_paths.yaml that ComfyUI read (its own, and --extra-model-paths-config) has a section
    with is_default true and a ditfuse key."""
    import itertools

    try:
        import yaml
        from comfy.cli_args import args

        paths = [os.path.join(os.path.dirname(os.path.realpath(folder_paths.__file__)), "extra_model_paths.yaml"),
                 *itertools.chain(*(getattr(args, "extra_model_paths_config", None) or []))]
        for path in paths:
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
            if any(isinstance(c, dict) and c.get("is_default") and c.get(A.FOLDER_KEY) for c in config.values()):
                return True
    except Exception as e:  # a yaml ComfyUI itself read; never fail the pack's loading over it
        log.warning("DiTFuse: could not read extra_model_paths.yaml (%s); models/ditfuse stays first", e)
    return False


def model_roots() -> list[str]:
    try:
        return folder_paths.get_folder_paths(A.FOLDER_KEY)
    except KeyError:
        return []


def low_vram_engine() -> dict:
    """Engine options for ComfyUI's VRAM state (comfy.model_management.vram_state): offload "layers" + kv_cache
    "cpu" under --lowvram / --novram (LOW_VRAM / NO_VRAM), else {} (adapters.engine_for_vram_state)."""
    state = getattr(mm, "vram_state", None)
    return A.engine_for_vram_state(getattr(state, "name", None))


# ---- the model object -------------------------------------------------------------------------------------
class DiTFuseModule(torch.nn.Module):
    """Transformer + VAE as one nn.Module, so ComfyUI's ModelPatcher can move and account for it."""

    def __init__(self, pipe):
        super().__init__()
        self.transformer = pipe.transformer
        self.vae = pipe.vae

    def get_dtype(self):
        return self.transformer.dtype


class DiTFuseResident(torch.nn.Module):
    """Under --lowvram / --novram: what stays on the GPU, the transformer without its blocks, and the VAE."""

    def __init__(self, pipe):
        super().__init__()
        self.parts = torch.nn.ModuleDict({n: m for n, m in pipe.transformer.named_children() if n != "layers"})
        self.vae = pipe.vae

    def get_dtype(self):
        return next(self.parts.parameters()).dtype


class DiTFuseModel:
    """DITFUSE_MODEL: the pipeline plus its ModelPatcher. Call .pipeline() before use: it asks ComfyUI's
    memory manager to load the weights on its device (and lets it offload them later)."""

    def __init__(self, pipe, patcher, info: dict):
        self.pipe = pipe
        self.patcher = patcher
        self.info = info
        self.resident = None  # --lowvram / --novram: the ModelPatcher of what stays on the GPU (not the blocks)

    def pipeline(self, memory_required: int = 0):
        """The pipeline on its device. memory_required: what the call needs besides the weights (bytes; see
        `sampling_memory`), which ComfyUI frees before loading — that much, not more."""
        engine = low_vram_engine()
        self.pipe.engine = engine
        if engine:
            return self._pipeline_low_vram(memory_required)
        if self.pipe.transformer.layers_offloaded:  # the state changed (tests switch it): whole again
            self.pipe.transformer.onload_layers()
        # force_full_load: ComfyUI's partial loading (and, from 0.12, its dynamic VRAM) moves only comfy.ops
        # layers on use (`comfy_cast_weights`); ours are torch/diffusers modules, which a partial load leaves on
        # the offload device when they do not fit (model_patcher.ModelPatcher.load skips them), so the forward
        # would meet CPU weights. The model loads whole; each call declares the rest it needs.
        mm.load_models_gpu([self.patcher], memory_required=int(memory_required), force_full_load=True)
        return self.pipe

    def _pipeline_low_vram(self, memory_required: int):
        """--lowvram / --novram: what core does for its own models there (the weights stay on the offload device
        and reach the GPU as they are used), with the engine's own mechanism, since core's partial loading moves
        only comfy.ops layers: the transformer blocks stay on the offload device (pinned) and each is copied to
        the GPU just before it runs (offload "layers"), the KV cache on the CPU. The rest (embeddings, final
        layer, VAE: ~0.5 GB + the VAE for OmniGen-v1 in bf16) is a ModelPatcher of its own, loaded whole through
        load_models_gpu with what the call needs plus two blocks in flight, so ComfyUI accounts for it and
        offloads it like its models."""
        t = self.pipe.transformer
        if self.resident is None:
            self.resident = comfy.model_patcher.ModelPatcher(
                DiTFuseResident(self.pipe), load_device=self.patcher.load_device,
                offload_device=self.patcher.offload_device)
        block = sum(p.numel() * p.element_size() for p in t.layers[0].parameters()) if len(t.layers) else 0
        mm.load_models_gpu([self.resident], memory_required=int(memory_required) + 2 * block, force_full_load=True)
        if not t.layers_offloaded:
            t.offload_layers(self.patcher.load_device)  # a no-op on a CPU
        return self.pipe

    def sampling_memory(self, image, max_side: int = 0, cfg=None, img_cfg=None, n_images: int = 2) -> int:
        """Bytes one sampling call on `image` (IMAGE [B,H,W,C]; items run one at a time) needs besides the
        weights: KV cache, activations and the VAE decode at the working size (ditfuse_core.memory)."""
        from ditfuse_core import images, memory

        h, w = image.shape[1:3]
        side = self.pipe.working_side((w, h), max_side or None)
        pw, ph = images.prepared_size((w, h), side, self.pipe.token_pixels)
        return memory.pipeline_sampling_bytes(self.pipe, ph, pw, n_images, cfg, img_cfg)

    def __repr__(self):
        return f"DiTFuseModel({self.info})"


def download_progress():
    """ComfyUI's progress bar over a download (MiB), and Cancel between writes (the bytes so far are kept and
    resumed by the next run)."""
    import comfy.utils

    bar = []

    def cb(done: int, total: int):
        mm.throw_exception_if_processing_interrupted()
        if not bar:
            bar.append(comfy.utils.ProgressBar(max(1, total >> 20)))
        bar[0].update_absolute(done >> 20, total >> 20)

    return cb


class DiTFuseModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        roots = model_roots()
        return io.Schema(
            node_id="DiTFuseModelLoader",
            display_name="DiTFuse Model Loader",
            category=CATEGORY,
            description="Loads an OmniGen-v1 model (original or diffusers folder in models/ditfuse, or the bundled "
                        "tiny model) with an optional DiTFuse LoRA.",
            inputs=[
                io.Combo.Input("model", options=A.list_models(roots), default=A.bundled_choice(),
                               tooltip="A model folder in models/ditfuse (original OmniGen-v1 or diffusers format)."),
                io.Combo.Input("lora", options=A.list_loras(roots), default=A.NO_LORA,
                               tooltip="A DiTFuse LoRA file or folder in models/ditfuse/loras."),
                io.Float.Input("lora_strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               tooltip="How much of the LoRA is applied: 1 as trained, 0 off (the base model)."),
                io.Combo.Input("dtype", options=list(A.DTYPES), default="auto",
                               tooltip="auto: the precision the model's ditfuse.json asks for (the bundled model: fp32), else "
                                       "bf16 on GPUs that support it, fp16 on other accelerators, fp32 on CPU "
                                       "(a KL VAE in bf16 where the CPU has it natively: ~2× faster; the bundled model's linear "
                                       "autoencoder always in fp32)."),
                io.Boolean.Input("offload", default=True,
                                 tooltip="Let ComfyUI move the model off the GPU when other models need the memory."),
                io.Combo.Input("weights", options=list(WEIGHTS), default="auto", optional=True,
                               tooltip="How the transformer's big weights are stored. auto: in dtype. fp8 halves their "
                                       "memory against bf16 at a small quality cost; the computation stays in dtype, "
                                       "and a LoRA stays exact on top (never merged into fp8)."),
                io.Boolean.Input("download_if_missing", default=False, optional=True,
                                 tooltip="OmniGen-v1 and the DiTFuse LoRA are listed before they are downloaded. On: "
                                         "running the loader downloads a chosen one that is missing (about 15.5 GB "
                                         "for OmniGen-v1) from the Hugging Face Hub into the first models/ditfuse "
                                         "folder, verified, resumable. Off: it fails with the `ditfuse download` "
                                         "command to run."),
            ],
            outputs=[DiTFuseModelType.Output("DITFUSE_MODEL", display_name="DiTFuse model",
                                             tooltip="The model and LoRA, managed by ComfyUI's memory manager.")],
        )

    # ComfyUI ≥ 0.7 checks model / lora / dtype / weights against their lists itself (one message, on that
    # input; the lists hold names inside the ditfuse folders and the downloadable ones); 0.3.75 does not, so the
    # pack does, with download_if_missing: a downloadable model that is missing with it off is refused at submit
    # here, and at run time (the same message, from execute) where core checks the lists.
    validate_inputs = validator(
        ("lora_strength",), {"dtype": A.DTYPES, "weights": WEIGHTS},
        extra={} if CORE_CHECKS_COMBOS else {
            "model": lambda v, download_if_missing=None: A.check_choice("model", v, model_roots(),
                                                                        bool(download_if_missing)),
            "lora": lambda v, download_if_missing=None: A.check_choice("lora", v, model_roots(),
                                                                       bool(download_if_missing))},
        context=() if CORE_CHECKS_COMBOS else ("download_if_missing",))

    @classmethod
    def execute(cls, model, lora, lora_strength, dtype, offload, weights="auto",
                download_if_missing=False) -> io.NodeOutput:
        from ditfuse_core.pipeline import DiTFusePipeline, resolve_dtypes

        roots = model_roots()
        for kind, name in (("model", model), ("lora", lora)):
            A.fetch_missing(kind, name, roots, bool(download_if_missing), callback=download_progress())
        folder = A.resolve_model(model, roots)
        lora_path = A.resolve_lora(lora, roots)
        load_device = mm.get_torch_device()
        offload_device = mm.unet_offload_device() if offload else load_device
        dt, vae_dt = resolve_dtypes(folder, load_device, dtype)
        pipe = DiTFusePipeline.from_pretrained(model=folder, lora=lora_path, lora_strength=lora_strength,
                                               device=offload_device, dtype=dt, vae_dtype=vae_dt, weights=weights)
        patcher = comfy.model_patcher.ModelPatcher(DiTFuseModule(pipe), load_device=load_device,
                                                   offload_device=offload_device)
        info = {"model": model, "lora": lora, "lora_strength": lora_strength, "dtype": str(dt), "vae_dtype": str(vae_dt),
                "weights": weights,
                "load_device": str(load_device), "offload_device": str(offload_device)}
        log.info("DiTFuse: loaded %s", info)
        return io.NodeOutput(DiTFuseModel(pipe, patcher, info))
