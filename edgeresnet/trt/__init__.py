"""TensorRT layer: pure planning (features, plan, trtexec, errors, plan headers, deployment configs)
plus the ``adapter`` package, the only code touching ``tensorrt``.

Nothing here imports ``tensorrt`` at import time; ``import edgeresnet.trt`` is cheap on any machine.
"""

from __future__ import annotations
