"""Comparison tables, plots and the self-contained HTML report of a run."""
