"""The interleaved protocol end to end, repeated: how often does the real CLI chain cry wolf, and catch 10 %?

Each trial runs, as a CI job would, one process of
``edgeresnet benchmark base.onnx head.onnx --rounds R --duration D --split --out DIR`` (three copies of one
small ResNet-18 ONNX: ``base``, ``same`` and ``slow``; ``EDGERESNET_INJECT_DELAY_ONLY`` puts a delay of
10 % of the first trial's median on ``slow`` only) and then ``edgeresnet regress`` at its default settings
(median, 5 % tolerance, confidence 0.95) on base vs same (an A/A pair: a "regression" is a false alarm) and on
base vs slow (a 10 % slowdown: a "regression" is a detection). Rates come with Wilson 95 % intervals.

Unlike ``gate_power.py`` (recorded and simulated samples), everything here is measured now, on this machine,
under whatever load it has; the load average is printed with the result. ``--background-load N`` adds N
processes that burn a CPU in bursts of random length (0.2-3 s busy, 0.2-3 s idle, seeded), so the machine's
speed changes under the benchmark the way a shared CI runner's does.

``--protocol separate`` measures the alternative for comparison: base, same and slow each benchmarked by its own
``edgeresnet benchmark`` process, back to back, with the same total duration per model.

    python benchmarks/gate_interleaved_cli.py [--trials 10] [--rounds 6] [--duration 6] [--background-load 0]
                                              [--protocol interleaved|separate]
                                              [--json benchmarks/data/gate_interleaved_cli.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gate_power import wilson  # noqa: E402
from benchmarks.gate_selftest import bench_sides, copy_sides, edgeresnet, make_onnx  # noqa: E402

SLOWDOWN = 0.10


def burn(seed: int) -> None:
    """Background load: busy for 0.2-3 s, idle for 0.2-3 s, forever (a child process; killed at the end)."""
    import random

    rng = random.Random(seed)
    while True:
        until = time.perf_counter() + rng.uniform(0.2, 3.0)
        while time.perf_counter() < until:
            pass
        time.sleep(rng.uniform(0.2, 3.0))


def trial(work: Path, copies: Path, rounds: int, duration: float, delay_ms: float,
          protocol: str = "interleaved") -> dict[str, str]:
    out = work / "results"
    shutil.rmtree(out, ignore_errors=True)
    files = bench_sides(copies, out, rounds, duration, delay_ms, protocol)
    verdicts = {}
    for side in ("same", "slow"):
        proc = edgeresnet("regress", "-b", str(files["base"]), "-c", str(files[side]), "--json", "-", expect=None)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"regress exited {proc.returncode}: {proc.stderr.strip()}")
        verdicts[side] = json.loads(proc.stdout)["results"][0]["verdict"]
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per model, over all rounds")
    parser.add_argument("--background-load", type=int, default=0, help="CPU-burning processes in random bursts")
    parser.add_argument("--protocol", choices=("interleaved", "separate"), default="interleaved")
    parser.add_argument("--json", default="benchmarks/data/gate_interleaved_cli.json")
    args = parser.parse_args()
    import multiprocessing

    burners = [multiprocessing.Process(target=burn, args=(seed,), daemon=True) for seed in range(args.background_load)]
    for process in burners:
        process.start()
    try:
        return run(args)
    finally:
        for process in burners:
            process.terminate()


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gate-interleaved-") as tmp:
        work = Path(tmp)
        onnx = make_onnx(work)
        copies = copy_sides(onnx, work / "copies")
        probe = work / "probe.json"
        edgeresnet("benchmark", str(onnx), "--backend", "ort", "--threads", "1", "--duration", "2", "--json",
                   str(probe))
        median = json.loads(probe.read_text())["results"][0]["latency_ms"]["median"]
        delay = SLOWDOWN * median
        print(f"median {median:.3f} ms: injecting {delay:.3f} ms into 'slow' (a {SLOWDOWN:.0%} slowdown)", flush=True)
        verdicts = [trial(work, copies, args.rounds, args.duration, delay, args.protocol) for _ in range(args.trials)]
    false_alarms = sum(v["same"] == "regression" for v in verdicts)
    detections = sum(v["slow"] == "regression" for v in verdicts)
    n = len(verdicts)
    doc = {"benchmark": "gate_interleaved_cli", "trials": n, "rounds": args.rounds, "duration_s": args.duration,
           "background_load": args.background_load, "protocol": args.protocol,
           "median_ms": median, "delay_ms": delay, "verdicts": verdicts,
           "false_alarms": false_alarms, "false_alarm_ci": wilson(false_alarms, n),
           "detections": detections, "detection_ci": wilson(detections, n),
           "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "wall_s": round(time.perf_counter() - started, 1),
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lo, hi = doc["false_alarm_ci"]
    dlo, dhi = doc["detection_ci"]
    print(f"A/A false alarms: {false_alarms}/{n} ({100 * false_alarms / n:.1f} %, 95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)")
    print(f"10 % slowdown caught: {detections}/{n} ({100 * detections / n:.1f} %, 95 % CI {100 * dlo:.1f}-{100 * dhi:.1f} %)")
    print(f"load average {load_start} -> {doc['loadavg_end']}, {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
