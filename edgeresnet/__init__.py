"""edgeresnet: ResNet-18/50 from training to a measured, regression-guarded TensorRT engine."""

__version__ = "0.1.0"
