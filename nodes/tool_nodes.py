"""Helpers around the tasks: the bundled example pairs and the fusion metrics."""
from __future__ import annotations

import json

from .comfy_api_version import io, ui

from . import adapters as A
from .common import CATEGORY, validator


PAIRS = ("ivif", "mff", "mef")


class DiTFuseExamplePair(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseExamplePair",
            display_name="DiTFuse Example Pair",
            category=CATEGORY,
            description="A bundled example pair (made from scikit-image photos; see example_images/README.md).",
            inputs=[io.Combo.Input("pair", options=list(PAIRS), default="ivif",
                                   tooltip="ivif: visible + infrared; mff: far focus + near focus; mef: over- + "
                                           "under-exposed.")],
            outputs=[io.Image.Output("image_1", display_name="image 1 (visible / far focus / over-exposed)",
                                     tooltip="Connect to image_1 of a DiTFuse node."),
                     io.Image.Output("image_2", display_name="image 2 (infrared / near focus / under-exposed)",
                                     tooltip="Connect to image_2 of a DiTFuse node.")],
        )

    validate_inputs = validator(combos={"pair": PAIRS})

    @classmethod
    def execute(cls, pair):
        a, b = A.example_pair(pair)
        return io.NodeOutput(a, b)


class DiTFuseMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiTFuseMetrics",
            display_name="DiTFuse Metrics",
            category=CATEGORY,
            description="Fusion quality metrics of a fused image against its two sources: a Markdown table and JSON.",
            inputs=[io.Image.Input("image_1", tooltip="Source image 1 (as given to the fusion)."),
                    io.Image.Input("image_2", tooltip="Source image 2 (as given to the fusion)."),
                    io.Image.Input("fused", tooltip="The fused image to score against the two sources.")],
            outputs=[io.String.Output("table", display_name="table (Markdown)",
                                      tooltip="Mean of each metric, with its direction (higher / lower is better)."),
                     io.String.Output("json", display_name="metrics (JSON)", tooltip="Every metric's value.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image_1, image_2, fused):
        try:
            from ditfuse_core.metrics import metrics_report
        except ImportError as e:
            raise RuntimeError(f"DiTFuse Metrics needs ditfuse_core.metrics.metrics_report ({e})") from e
        from ditfuse_core.pipeline import batch_size

        n = batch_size({"image_1": image_1, "image_2": image_2, "fused": fused})
        tables, reports = [], []
        for i in range(n):
            md, rep = metrics_report(*(A.pick(t, i)[0].cpu().numpy() for t in (image_1, image_2, fused)))
            tables.append(md if n == 1 else f"### item {i}\n\n{md}")
            reports.append(rep)
        table = "\n\n".join(tables)
        js = json.dumps(reports[0] if n == 1 else reports, indent=2, default=float)
        return io.NodeOutput(table, js, ui=ui.PreviewText(table))
