"""One inference contract, one implementation per backend (torch, onnxruntime, tensorrt).

Loading is separate from running: ``load_runner(path)`` returns an un-activated ``Runner``; entering it
(``with runner:``) allocates sessions/contexts, ``infer`` maps preprocessed NCHW float32 images to logits.
Heavy imports happen inside the backends, so a user without TensorRT never imports it.
"""

from edgeresnet.runners.base import BACKENDS, Runner, backend_for_path, load_runner

__all__ = ["BACKENDS", "Runner", "backend_for_path", "load_runner"]
