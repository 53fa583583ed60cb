"""The one PyTorch device resolver (training, the multi-process launcher, the torch runner).

Its own module so that ``train/loop.py`` and ``train/distributed.py`` both import it and not each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.train.distributed import DistContext


def resolve_device(name: str | None, ctx: DistContext | None = None) -> Any:
    """The one PyTorch device resolver (training, the launcher, the torch runner): ``auto``/None = CUDA when
    available, else CPU; a CUDA request without a GPU, or a name torch does not know, is a one-line error."""
    import torch

    if ctx is not None and ctx.backend == "nccl":
        return torch.device("cuda", ctx.local_rank)  # one GPU per process
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available to PyTorch here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:  # torch.device("gpu0"): "Expected one of cpu, cuda, ... device type at start of device string"
        raise UserError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N") from None
