"""Per-epoch records as CSV, TensorBoard event files and a PNG of the training curves."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import write_text_atomic

CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "steps", "seconds", "best")


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> Path:
    """The whole history, rewritten atomically each epoch (so a resumed run continues the same file)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({k: _fmt(record.get(k)) for k in CSV_COLUMNS})
    return write_text_atomic(path, buffer.getvalue())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class TensorBoardLog:
    """Scalars per epoch under ``<out>/tensorboard``; a resumed run purges steps after its restart point."""

    def __init__(self, log_dir: Path, start_epoch: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1 if start_epoch else None)

    def add(self, record: dict[str, Any]) -> None:
        step = int(record["epoch"])
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                         ("accuracy/val", "val_acc"), ("lr", "lr")):
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "training") -> Path | None:
    """Loss, accuracy and LR per epoch in one PNG (matplotlib, Agg backend: no display needed)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeresnet.artifacts import atomic_output

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    axes[0].set_title("loss")
    axes[0].set_yscale("log")
    axes[1].plot(epochs, [r["train_acc"] for r in history], "o-", label="train")
    axes[1].plot(epochs, [r["val_acc"] for r in history], "o-", label="val")
    axes[1].set_title("top-1 accuracy (%)")
    axes[2].plot(epochs, [r["lr"] for r in history], "o-", color="tab:green")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
