"""How often does `edgeresnet regress` cry wolf, and how often does it catch a 10 % slowdown?

Measures, at the gate's default settings (metric median, tolerance 5 %, confidence 0.95, raw samples):

* false-alarm rate: A/A comparisons, where baseline and current are the same model, so every
  "regression" verdict is a false alarm (target <= 5 %);
* detection rate: the same comparisons with every current sample multiplied by 1.10, a 10 % slowdown
  (target >= 95 %).

On recorded noise (``benchmarks/data/*.json``: real ONNX Runtime latencies of a small ResNet-18 on our shared
2-core machine at load 5-12, written by ``benchmarks/record_gate_noise.py``) and on simulated noise
(lognormal, heavy-tailed stalls, a noisy machine whose speed drifts, measured sequentially, in alternating
rounds or interleaved). Rates come with Wilson 95 % intervals and the number of trials. Recorded trials reuse
the same recordings, so they are not independent; the number of recordings is printed beside them.

    python benchmarks/gate_power.py                 # the defaults, under a minute
    python benchmarks/gate_power.py --alternatives  # also the settings that were not chosen (~15 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeresnet.gate import GateSettings, compare_latency  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
SLOWDOWN = 1.10

Runs = list[np.ndarray]
Trial = tuple[Runs, Runs]  # (baseline runs, current runs), each run in time order


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------------------------
# recorded noise
# ----------------------------------------------------------------------------------------------


def load_pairs(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    return [(np.asarray(p["a"]["samples_ms"]), np.asarray(p["b"]["samples_ms"])) for p in data["pairs"]]


def back_to_back(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Trial]:
    """One run each, measured one after the other (a CI job that benchmarks baseline, then current)."""
    for a, b in pairs:
        yield [a], [b]
        yield [b], [a]


def halves(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Trial]:
    """First and second half of each recording as separate trials (more trials, half the samples)."""
    for a, b in pairs:
        h = a.size // 2
        for part in (slice(0, h), slice(h, None)):
            yield [a[part]], [b[part]]
            yield [b[part]], [a[part]]


def stored_baseline(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Trial]:
    """Baseline and current recorded minutes apart (a baseline file kept from an earlier job)."""
    runs = [(i, r) for i, (a, b) in enumerate(pairs) for r in (a, b)]
    for i, x in runs:
        for j, y in runs:
            if i != j:
                yield [x], [y]


def interleaved(pairs: list[tuple[np.ndarray, np.ndarray]], rounds: int, trials: int, seed: int) -> Iterator[Trial]:
    """``rounds`` short runs per side, alternating in time (ABBA order) as the CI example does."""
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        chosen = rng.choice(len(pairs), size=rounds, replace=False)
        flip = rng.integers(0, 2)
        base, cur = [], []
        for r, index in enumerate(sorted(chosen)):
            a, b = pairs[index]
            if (r + flip) % 2:
                a, b = b, a
            base.append(a)
            cur.append(b)
        yield base, cur


# ----------------------------------------------------------------------------------------------
# simulated noise (each call: one run of n samples, median about 10 ms)
# ----------------------------------------------------------------------------------------------


def sim_lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    return 10.0 * np.exp(rng.normal(0.0, 0.10, n))


def _spikes(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """1 + Pareto(1.5) stalls (0.5x .. hundreds of x extra) hitting ``rate`` of the iterations."""
    hit = rng.random(n) < rate
    return 1.0 + hit * 0.5 * (rng.random(n) ** (-1.0 / 1.5))


def sim_heavy_tail(rng: np.random.Generator, n: int) -> np.ndarray:
    return 10.0 * np.exp(rng.normal(0.0, 0.05, n)) * _spikes(rng, n, 0.03)


def machine_trial(rng: np.random.Generator, n: int, protocol: str) -> Trial:
    """A noisy machine: shared slow drift of its speed (AR(1), rho 0.98, sd 4 %), a per-run offset (sd 1 %),
    jitter (5 %) and 1 % stalls. A and B take turns on one time line according to ``protocol``:
    "sequential" (all of A, then all of B), "rounds" (4 alternating rounds, ABBA) or "interleaved" (ABBA per
    iteration)."""
    rho, sd, total = 0.98, 0.04, 2 * n
    drift = np.empty(total)
    drift[0] = rng.normal(0.0, sd)
    innovations = rng.normal(0.0, sd * math.sqrt(1 - rho * rho), total)
    for t in range(1, total):
        drift[t] = rho * drift[t - 1] + innovations[t]
    if protocol == "sequential":
        owner = np.repeat([0, 1], n)
    elif protocol == "rounds":
        owner = np.repeat([0, 1, 1, 0, 0, 1, 1, 0], n // 4)
    else:
        owner = np.tile([0, 1, 1, 0], n // 2)
    # runs: maximal stretches of one owner in time; each run gets its own offset
    change = np.flatnonzero(np.diff(owner)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [total]))
    latency = 10.0 * np.exp(drift + rng.normal(0.0, 0.05, total)) * _spikes(rng, total, 0.01)
    sides: tuple[Runs, Runs] = ([], [])
    for lo, hi in zip(starts, ends):
        sides[owner[lo]].append(latency[lo:hi] * math.exp(rng.normal(0.0, 0.01)))
    if protocol == "interleaved":  # one process: one run per side, samples in time order
        return [np.concatenate(sides[0])], [np.concatenate(sides[1])]
    return sides


def simulated(gen: Callable[[np.random.Generator, int], np.ndarray], n: int, trials: int, seed: int) -> Iterator[Trial]:
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        yield [gen(rng, n)], [gen(rng, n)]


def machine(protocol: str, n: int, trials: int, seed: int) -> Iterator[Trial]:
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        yield machine_trial(rng, n, protocol)


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Rates:
    scenario: str
    samples: str
    trials: int
    false_alarms: int
    detections: int
    distinct_runs: str

    @property
    def fa_rate(self) -> float:
        return self.false_alarms / self.trials

    @property
    def det_rate(self) -> float:
        return self.detections / self.trials


def measure(scenario: str, samples: str, trials: Sequence[Trial], settings: GateSettings, distinct: str) -> Rates:
    alarms = detections = 0
    for base, cur in trials:
        if compare_latency(base, cur, settings).verdict == "regression":
            alarms += 1
        if compare_latency(base, [c * SLOWDOWN for c in cur], settings).verdict == "regression":
            detections += 1
    return Rates(scenario, samples, len(trials), alarms, detections, distinct)


NOISY = "separate runs on an oversubscribed machine: interleave instead"


def scenarios(trials: int, seed: int) -> list[tuple[str, str, list[Trial], str, bool | str]]:
    """(name, samples per side, trials, distinct recorded runs, True if it counts toward the targets, else why not)."""
    inter = load_pairs("ort_cpu_interleaved_300x24.json")
    long_pairs = load_pairs("ort_cpu_pairs_300x12.json")
    short_pairs = load_pairs("ort_cpu_pairs_100x60.json")
    n_inter, n_long, n_short = inter[0][0].size, long_pairs[0][0].size, short_pairs[0][0].size
    return [
        ("recorded ORT CPU: interleaved in one process (ABBA)", f"{n_inter}", list(back_to_back(inter)),
         f"{len(inter)} recordings", True),
        ("recorded ORT CPU: interleaved, halves of the recordings", f"{n_inter // 2}", list(halves(inter)),
         f"{len(inter)} recordings", True),
        ("simulated: lognormal, sd 10 %", "300", list(simulated(sim_lognormal, 300, trials, seed + 2)), "-", True),
        ("simulated: heavy tail, 3 % Pareto stalls", "300", list(simulated(sim_heavy_tail, 300, trials, seed + 3)),
         "-", True),
        ("simulated noisy machine: interleaved (ABBA)", "300", list(machine("interleaved", 300, trials, seed + 4)),
         "-", True),
        ("simulated noisy machine: 4 alternating rounds", "4 x 75", list(machine("rounds", 300, trials, seed + 6)),
         "-", True),
        ("simulated noisy machine: one run each, back to back", "300",
         list(machine("sequential", 300, trials, seed + 7)), "-", NOISY),
        ("simulated: lognormal, sd 10 %, 50 samples", "50", list(simulated(sim_lognormal, 50, trials, seed + 5)),
         "-", True),
        ("simulated: lognormal, sd 10 %, 30 samples", "30", list(simulated(sim_lognormal, 30, trials, seed + 8)),
         "-", "below the 50 samples the gate asks for"),
        ("recorded ORT CPU: separate processes, back to back", f"{n_long}", list(back_to_back(long_pairs)),
         f"{2 * len(long_pairs)} runs", NOISY),
        ("recorded ORT CPU: separate processes, 3 alternating rounds", f"3 x {n_short}",
         list(interleaved(short_pairs, 3, trials, seed)), f"{2 * len(short_pairs)} runs", NOISY),
        ("recorded ORT CPU: separate processes, minutes apart", f"{n_long}", list(stored_baseline(long_pairs)),
         f"{2 * len(long_pairs)} runs", NOISY),
    ]


def fmt_rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} ({k}/{n}; {lo:.1%}-{hi:.1%})"


def run(settings: GateSettings, trials: int, seed: int, label: str) -> list[Rates]:
    blocks = f"{settings.blocks} blocks per side" if settings.blocks else "raw samples"
    print(f"\n{label}: metric {settings.metric}, tolerance {settings.tolerance:.0%}, confidence "
          f"{settings.confidence:.2f}, {blocks}, method {settings.resolved_method()}", flush=True)
    head = f"{'scenario':70s} {'n/side':>8s} {'A/A false alarms (95% CI)':>30s} {'10% slowdown caught (95% CI)':>32s}"
    print(head)
    print("-" * len(head))
    rows = []
    for name, samples, cases, distinct, counts in scenarios(trials, seed):
        rates = measure(name, samples, cases, settings, distinct)
        mark = "" if counts is True else f"  [not counted: {counts}]"
        print(f"{name:70s} {samples:>8s} {fmt_rate(rates.false_alarms, rates.trials):>30s} "
              f"{fmt_rate(rates.detections, rates.trials):>32s}{mark}", flush=True)
        rows.append(dataclasses.replace(rates))
        rows[-1].__dict__["counts"] = counts is True
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="False-alarm and detection rates of the regression gate.")
    parser.add_argument("--trials", type=int, default=400, help="trials per simulated / interleaved scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alternatives", action="store_true",
                        help="also measure settings that were not chosen (raw samples, other block counts, bootstrap)")
    parser.add_argument("--json", type=Path, default=None, help="write the rates as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    defaults = GateSettings()
    rows = run(defaults, args.trials, args.seed, "default settings")
    counted = [r for r in rows if r.__dict__.get("counts")]
    worst_fa = max(r.fa_rate for r in counted)
    worst_det = min(r.det_rate for r in counted)
    ok = worst_fa <= 0.05 and worst_det >= 0.95
    print(f"\nsupported protocols: worst false-alarm rate {worst_fa:.1%} (target <= 5%), worst detection rate "
          f"{worst_det:.1%} (target >= 95%): {'targets met' if ok else 'TARGETS MISSED'}")
    results = {"defaults": [dataclasses.asdict(r) | {"counts": r.__dict__.get("counts")} for r in rows],
               "targets_met": ok}
    if args.alternatives:
        alternatives = {
            "10 blocks per side (batch medians)": dataclasses.replace(defaults, blocks=10),
            "20 blocks per side (batch medians)": dataclasses.replace(defaults, blocks=20),
            "40 blocks per side (batch medians)": dataclasses.replace(defaults, blocks=40),
            "bootstrap of the median ratio": dataclasses.replace(defaults, method="bootstrap"),
            "tolerance 3%": dataclasses.replace(defaults, tolerance=0.03),
            "p90": dataclasses.replace(defaults, metric="p90"),
            "p99": dataclasses.replace(defaults, metric="p99"),
        }
        for name, settings in alternatives.items():
            alt = run(settings, max(100, args.trials // 2), args.seed, f"alternative: {name}")
            results[name] = [dataclasses.asdict(r) for r in alt]
    print(f"\n{time.perf_counter() - started:.0f} s; python benchmarks/gate_power.py {' '.join(sys.argv[1:])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
