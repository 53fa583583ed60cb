"""The regression gate: pair benchmark results, decide latency and accuracy verdicts from raw samples.

Why this shape: a CI gate must catch real slowdowns without crying wolf on noisy machines, so the verdict
comes from the raw per-iteration samples, never from summary numbers, and needs two things at once:

* **statistical significance** at ``confidence``: the confidence interval of the relative change lies
  entirely above zero (a slowdown) or below it (an improvement);
* **practical size**: the estimated relative change of the chosen metric is larger than ``tolerance``.

Methods (chosen on recorded and simulated noise by ``benchmarks/gate_power.py``, see the README):

* ``median`` (default): Mann-Whitney U test on the log latencies, the Hodges-Lehmann estimate of their
  shift (relative change = exp(shift) - 1) and its distribution-free (Moses) interval from the U
  distribution; exact when there are no ties and few samples, normal approximation with tie correction
  otherwise. Rank based: stalls and spikes move nothing, bimodal "two speed" runs do not make it jump the
  way the ratio of medians does, and with no seed the same two files always give the same verdict.
* ``p90`` / ``p99``: a seeded moving-block bootstrap (blocks of about n / 20 samples) of the ratio of the
  two quantiles (trtexec's nearest-rank definition, as in the result files); percentile interval.

The samples of a run are not independent (machine speed drifts), so the interval speaks about these two
runs, not about a re-run; what protects against run-to-run shifts is the tolerance, and, on noisy machines,
measuring baseline and current interleaved or in alternating rounds (several ``--baseline``/``--current``
files are pooled). ``blocks`` > 0 cuts each run into contiguous blocks first (batch medians): wider,
drift-aware intervals, but it lost power on our recorded data without lowering false alarms, so it is off.

Modules: ``stats`` (the numbers, pure numpy/scipy), ``settings``, ``decision`` (``Verdict`` and structured
reasons), ``inputs`` (files, pairing, environments), ``report`` (JSON, Markdown, JUnit), ``stage``
(``regress``: files in, report out).
"""

from edgeresnet.gate.decision import (
    AccuracyComparison,
    LatencyComparison,
    Outcome,
    Status,
    Verdict,
    compare_accuracy,
    compare_latency,
)
from edgeresnet.gate.inputs import key_label, load_results, result_key, validate_results
from edgeresnet.gate.report import (
    EXIT_PASS,
    EXIT_REGRESSION,
    HEADERS,
    GateReport,
    KeyResult,
    table_rows,
    to_junit,
    to_markdown,
)
from edgeresnet.gate.settings import GateSettings, parse_fraction
from edgeresnet.gate.stage import regress, run_gate

__all__ = [
    "EXIT_PASS", "EXIT_REGRESSION", "HEADERS", "AccuracyComparison", "GateReport", "GateSettings",
    "KeyResult", "LatencyComparison", "Outcome", "Status", "Verdict", "compare_accuracy", "compare_latency",
    "key_label", "load_results", "parse_fraction", "regress", "result_key", "run_gate", "table_rows", "to_junit",
    "to_markdown", "validate_results",
]
