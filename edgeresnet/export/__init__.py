"""ONNX export per opset and exporter, with the preprocessing contract and proven parity.

``export_onnx(model, preprocess, out, ...)`` exports a model in memory; ``export_checkpoint(path, out, ...)``
one of our checkpoint files; ``export_stage(checkpoint, out_dir)`` is the demo's one-call stage. The ONNX has
one input ``input`` (NCHW float32, batch dimension ``batch`` when dynamic) and one output ``logits``.
"""

from edgeresnet.export.checkpoint import export_checkpoint, export_stage, resolve_data_spec
from edgeresnet.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ExportResult, as_profile, export_onnx
from edgeresnet.export.opset import OpsetChoice, choose_opset, resolve_target

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ExportResult", "OpsetChoice", "as_profile", "choose_opset",
           "export_checkpoint", "export_onnx", "export_stage", "resolve_data_spec", "resolve_target"]
