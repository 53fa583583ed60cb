"""Model compression: structured pruning, distillation (and, from the quantization modules, QAT/PTQ).

Kept import-light on purpose: each submodule imports torch itself, so ``import edgeresnet.compress`` is cheap.
"""
