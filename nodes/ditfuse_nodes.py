"""DiTFuse ComfyUI nodes (V3 schema): the extension ComfyUI loads. Thin adapters over ditfuse_core, one module
per kind of node; imported only inside ComfyUI."""
from __future__ import annotations

from typing_extensions import override

import comfy.model_management as mm
from .comfy_api_version import ComfyExtension, io

from ditfuse_core import cancel

from .chain_nodes import DiTFuseCondition, DiTFuseDecode, DiTFuseEncode, DiTFuseSampler
from .model_nodes import DiTFuseModelLoader, register_model_folder
from .task_nodes import DiTFuseControl, DiTFuseFuse, DiTFuseSegment
from .tool_nodes import DiTFuseExamplePair, DiTFuseMetrics

# Cancel between transformer layers, attention chunks and VAE convolutions, not only once per sampling step
cancel.register(mm.throw_exception_if_processing_interrupted)

NODES = [DiTFuseModelLoader, DiTFuseFuse, DiTFuseControl, DiTFuseSegment, DiTFuseEncode, DiTFuseCondition,
         DiTFuseSampler, DiTFuseDecode, DiTFuseExamplePair, DiTFuseMetrics]


class DiTFuseExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        register_model_folder()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folder()
        return NODES
