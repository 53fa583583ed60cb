"""Data: the embedded digits set, ImageFolder directories, and the preprocessing presets."""

from edgeresnet.data.presets import Augment, Preprocess, preset_for
from edgeresnet.data.sources import DataSplits, ImageDataset, Sample, load_data

__all__ = ["Augment", "DataSplits", "ImageDataset", "Preprocess", "Sample", "load_data", "preset_for"]
