"""Benchmarking: the timing loop, trtexec-compatible statistics, environment capture, the result schema,
trtexec imports. ``core.benchmark_run_dir`` benchmarks every artifact of a run and writes the report."""
