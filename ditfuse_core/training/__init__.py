"""DiTFuse training: M3 data (`m3`), the tiny VAE trainer and the flow-matching (full / LoRA) trainer.

Needs the ``train`` extra (``pip install -e '.[train]'``: accelerate). Entry points:

* ``python -m ditfuse_core.training.vae_trainer``   – train a small ``AutoencoderKL``
* ``python -m ditfuse_core.training.flow``  – flow-matching training of the transformer (full or LoRA),
  also under ``accelerate launch`` for multi-GPU / multi-node
* ``python -m ditfuse_core.training.m3``    – M3 samples as OmniGen JSONL + PNGs
(The bundled model's builder lives outside the package: ``python -m tools.build_default_model``.)
"""
