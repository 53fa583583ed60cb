"""Our percentile code vs trtexec's definition, on per-query samples from --exportTimes files.

trtexec (TensorRT samples/common/sampleReporting.cpp) computes, in float32:
    exclude = int32((1 - p / 100) * n);  value = sorted[max(n - 1 - exclude, 0)]
and the median as the middle sample (mean of the two middle ones for even n). This script re-implements
that independently with numpy float32 scalars and checks that edgeresnet.bench.stats gives identical
numbers on every metric of the recorded traces in tests/data/trtexec/, then on every n up to 5000 for the
usual percentiles. It also shows how often float64 arithmetic or numpy's interpolating percentile would
have reported something else. Run: python benchmarks/bench_percentiles.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeresnet.bench import stats  # noqa: E402
from edgeresnet.bench.trtexec_times import parse_export_times  # noqa: E402

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def trtexec_percentile(sorted_values: list[float], p: float) -> float:
    """Line-by-line transliteration of findPercentile with float32/int32 as in C++."""
    n = np.int32(len(sorted_values))
    exclude = np.int32((np.float32(1) - np.float32(p) / np.float32(100)) * np.float32(n))
    return sorted_values[max(int(n) - 1 - int(exclude), 0)]


def trtexec_median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    m = n // 2
    if n % 2:
        return sorted_values[m]
    return (sorted_values[m - 1] + sorted_values[m]) / 2  # float32 in C++; compared with tolerance below


def float64_percentile(sorted_values: list[float], p: float) -> float:
    n = len(sorted_values)
    return sorted_values[max(n - 1 - int((1 - p / 100) * n), 0)]


def main() -> int:
    files = sorted((ROOT / "tests" / "data" / "trtexec").glob("*.times.json"))
    if not files:
        print("no --exportTimes files found in tests/data/trtexec")
        return 1
    checked = mismatches = 0
    for path in files:
        records = parse_export_times(json.loads(path.read_text()), str(path))
        print(f"{path.name}: {len(records)} records")
        for metric in ("latency", "gpu_compute", "h2d", "d2h"):
            values = [r[metric] for r in records if metric in r]
            ordered = sorted(values)
            ours = stats.summarize(values, percentiles=PERCENTILES)
            row = []
            for p in PERCENTILES:
                reference = trtexec_percentile(ordered, p)
                mine = ours[stats.percentile_key(p)]
                checked += 1
                if mine != reference:
                    mismatches += 1
                row.append(f"p{p:g}={mine:.6g}{'' if mine == reference else ' (trtexec ' + format(reference, '.6g') + ')'}")
            median_ok = abs(ours["median"] - trtexec_median(ordered)) <= 1e-6 * max(1.0, abs(ours["median"]))
            checked += 3
            mismatches += (not median_ok) + (ours["min"] != ordered[0]) + (ours["max"] != ordered[-1])
            interp = np.percentile(values, 99)
            print(f"  {metric:11s} n={len(values)} min={ours['min']:.6g} median={ours['median']:.6g} "
                  + " ".join(row) + f" | numpy-linear p99={interp:.6g}")
    # every n up to 5000: index identity, and how often float64 or interpolation would differ
    sweep = sweep_f64 = 0
    for n in range(1, 5001):
        data = list(range(n))
        for p in PERCENTILES:
            ours = stats.percentile(data, p)
            reference = trtexec_percentile(data, p)
            sweep += ours != reference
            sweep_f64 += float64_percentile(data, p) != reference
    print(f"sample statistics checked: {checked}, differences from trtexec's definition: {mismatches}")
    print(f"rank sweep n=1..5000 x p={','.join(f'{p:g}' for p in PERCENTILES)}: {sweep} differences "
          f"(float64 arithmetic would differ in {sweep_f64} of {5000 * len(PERCENTILES)} cases)")
    identical = mismatches == 0 and sweep == 0
    print("RESULT: identical" if identical else "RESULT: DIFFERENT")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
