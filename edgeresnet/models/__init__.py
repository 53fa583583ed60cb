"""Models: the ResNet-18/50 builders and our checkpoint format (``resnet``), and the import stage for
torchvision/timm/safetensors weights (``weights_import``). Importing this package loads no torch."""

from edgeresnet.models.resnet import (
    ARCHS,
    ModelSpec,
    build_model,
    conform_to_state_dict,
    describe_key_mismatch,
    extract_state_dict,
    find_state_dict,
    import_weights,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
)

__all__ = [
    "ARCHS",
    "ModelSpec",
    "build_model",
    "conform_to_state_dict",
    "describe_key_mismatch",
    "extract_state_dict",
    "find_state_dict",
    "import_weights",
    "load_checkpoint",
    "make_checkpoint",
    "model_from_checkpoint",
]
