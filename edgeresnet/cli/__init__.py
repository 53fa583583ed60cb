"""Command-line interface: parsing, printing and exit codes only; the work lives in the stage modules."""
