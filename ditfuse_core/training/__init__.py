"""DiTFuse training: M3 data streaming, the tiny VAE trainer and the flow-matching (full / LoRA) trainer.

Needs the ``train`` extra (``pip install -e '.[train]'``: accelerate). Entry points:

* ``python -m ditfuse_core.training.vae``   – train a small ``AutoencoderKL``
* ``python -m ditfuse_core.training.flow``  – flow-matching training of the transformer (full or LoRA),
  also under ``accelerate launch`` for multi-GPU / multi-node
* ``scripts/train_default_model.py``        – VAE then transformer, writes a complete model folder
"""
