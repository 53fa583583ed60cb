"""What machine a number was measured on: CPU, libraries, GPU clocks and throttling, Jetson power mode.

Why: a latency without its clocks, power mode and library versions cannot be compared or reproduced.
Every probe is optional: a missing tool is recorded as ``missing`` in ``probes``, a failing one as
``failed: ...``, and the benchmark goes on. Parsers are pure functions over the tools' text output and
are tested on recorded samples; the thin ``capture_*`` functions run the tools.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import library_versions

# NVML clocks-event (throttle) reason bits, nvml.h (nvmlClocksThrottleReasons / nvmlClocksEventReasons).
THROTTLE_REASONS: dict[int, str] = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}
# Reasons that mean the GPU ran slower than it could while we measured.
SLOWDOWN_REASONS = frozenset({"SwPowerCap", "HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown"})

NVIDIA_SMI_FIELDS = (
    "name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
    "clocks.applications.graphics", "power.draw", "power.limit", "temperature.gpu",
    "clocks_throttle_reasons.active", "persistence_mode",
)

Runner = Callable[[list[str], float], "str | None"]


# ---------------------------------------------------------------------------------------------
# pure parsers
# ---------------------------------------------------------------------------------------------
def parse_cpuinfo(text: str) -> str | None:
    """CPU model from /proc/cpuinfo: ``model name`` on x86, ``Hardware``/``Model`` or the part on ARM."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "model", "cpu model", "processor"):
        value = fields.get(key)
        if value and not value.isdigit():
            return value
    part = fields.get("cpu part")
    if part:
        return f"ARM CPU part {part} (implementer {fields.get('cpu implementer', '?')})"
    return None


def decode_throttle_reasons(mask: int) -> list[str]:
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


def _number(text: str) -> float | int | str | None:
    text = text.strip()
    if text in ("", "[N/A]", "N/A", "[Not Supported]", "Not Supported"):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def parse_nvidia_smi_csv(text: str, fields: tuple[str, ...] = NVIDIA_SMI_FIELDS) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` -> one dict per GPU."""
    gpus = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            continue
        raw = dict(zip(fields, values, strict=True))
        gpu: dict[str, Any] = {
            "name": raw.get("name"),
            "driver": raw.get("driver_version"),
            "pstate": raw.get("pstate"),
            "clocks_mhz": {"sm": _number(raw.get("clocks.sm", "")), "mem": _number(raw.get("clocks.mem", "")),
                           "max_sm": _number(raw.get("clocks.max.sm", "")),
                           "max_mem": _number(raw.get("clocks.max.mem", "")),
                           "applications_graphics": _number(raw.get("clocks.applications.graphics", ""))},
            "power_w": {"draw": _number(raw.get("power.draw", "")), "limit": _number(raw.get("power.limit", ""))},
            "temperature_c": _number(raw.get("temperature.gpu", "")),
            "persistence_mode": raw.get("persistence_mode"),
        }
        reasons = raw.get("clocks_throttle_reasons.active", "")
        if reasons.lower().startswith("0x"):
            mask = int(reasons, 16)
            gpu["throttle_mask"] = mask
            gpu["throttle_reasons"] = decode_throttle_reasons(mask)
        gpus.append(gpu)
    return gpus


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` then the mode id on its own line."""
    match = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if not match:
        return None
    mode: dict[str, Any] = {"name": match.group(1)}
    after = text[match.end():]
    ident = re.search(r"^\s*(\d+)\s*$", after, re.MULTILINE)
    if ident:
        mode["id"] = int(ident.group(1))
    return mode


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """``jetson_clocks --show``: per-CPU governor and frequencies, GPU, EMC, DLA, fan, power mode."""
    out: dict[str, Any] = {"cpus": {}, "engines": {}}
    soc = re.search(r"SOC family:\s*(\S+)\s+Machine:\s*(.+)$", text, re.MULTILINE)
    if soc:
        out["soc_family"], out["machine"] = soc.group(1), soc.group(2).strip()
    for match in re.finditer(r"^cpu(\d+):\s*(.*)$", text, re.MULTILINE):
        out["cpus"][f"cpu{match.group(1)}"] = _key_values(match.group(2).split("IdleStates:")[0])
    for match in re.finditer(r"^(GPU|EMC)\s+(MinFreq=.*)$", text, re.MULTILINE):
        out[match.group(1).lower()] = _key_values(match.group(2))
    for match in re.finditer(r"^([A-Z0-9_]+):\s+(Online=.*)$", text, re.MULTILINE):
        out["engines"][match.group(1)] = _key_values(match.group(2))
    tpcs = re.search(r"Active GPU TPCs:\s*(\d+)", text)
    if tpcs:
        out["active_gpu_tpcs"] = int(tpcs.group(1))
    fan = re.search(r"^(?:Fan|FAN)[: ](.*)$", text, re.MULTILINE)
    if fan:
        out["fan"] = fan.group(1).strip()
    mode = parse_nvpmodel(text)
    if mode:
        out["power_mode"] = mode["name"]
    return out


def _key_values(text: str) -> dict[str, Any]:
    return {k: _number(v) for k, v in re.findall(r"(\w+)=(\S+)", text)}


def clocks_locked(clocks: dict[str, Any]) -> tuple[bool, list[str]]:
    """Locked = every online CPU and the GPU run with MinFreq == MaxFreq (what ``jetson_clocks`` sets)."""
    reasons = []
    gpu = clocks.get("gpu") or {}
    if gpu and gpu.get("MinFreq") != gpu.get("MaxFreq"):
        reasons.append(f"GPU MinFreq {gpu.get('MinFreq')} != MaxFreq {gpu.get('MaxFreq')}")
    for name, cpu in sorted((clocks.get("cpus") or {}).items()):
        if cpu.get("Online", 1) == 0:
            continue
        if cpu.get("MinFreq") != cpu.get("MaxFreq"):
            reasons.append(f"{name} MinFreq {cpu.get('MinFreq')} != MaxFreq {cpu.get('MaxFreq')}")
            break  # one CPU line is enough to say it
    if not gpu and not clocks.get("cpus"):
        reasons.append("no clock lines found")
    return not reasons, reasons


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One ``tegrastats`` line: RAM, per-CPU load@MHz, EMC and GPU (GR3D) load and clock, temperatures, rails."""
    out: dict[str, Any] = {}
    ram = re.search(r"RAM (\d+)/(\d+)MB", line)
    if ram:
        out["ram_mb"] = {"used": int(ram.group(1)), "total": int(ram.group(2))}
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    if cpu:
        cores = []
        for item in cpu.group(1).split(","):
            m = re.match(r"\s*(\d+)%@(\d+)", item)
            cores.append({"load_pct": int(m.group(1)), "mhz": int(m.group(2))} if m else None)  # None = off
        out["cpu"] = cores
    emc = re.search(r"EMC_FREQ (\d+)%(?:@(\d+))?", line)
    if emc:
        out["emc"] = {"load_pct": int(emc.group(1)), "mhz": int(emc.group(2)) if emc.group(2) else None}
    gr3d = re.search(r"GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?", line)
    if gr3d:
        mhz = [int(x) for x in gr3d.group(2).split(",") if x] if gr3d.group(2) else []
        out["gpu"] = {"load_pct": int(gr3d.group(1)), "mhz": mhz[0] if len(mhz) == 1 else (mhz or None)}
    temps = {name: float(value) for name, value in re.findall(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b", line)}
    if temps:
        out["temperature_c"] = {k: v for k, v in temps.items() if v > -200}  # -256C = sensor off
    rails = {}
    for name, cur, avg in re.findall(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b", line):
        if name not in ("RAM", "SWAP", "IRAM"):
            rails[name] = {"mw": int(cur), "avg_mw": int(avg)}
    if rails:
        out["power_mw"] = rails
    return out


def detect_jetson(model_text: str | None, release_text: str | None) -> str | None:
    """The board name when this is a Jetson (device-tree model or /etc/nv_tegra_release), else None."""
    if model_text and ("jetson" in model_text.lower() or "tegra" in model_text.lower() or "orin" in model_text.lower()):
        return model_text.strip("\x00").strip()
    if release_text and "R" in release_text and "REVISION" in release_text.upper():
        return "Jetson (" + release_text.strip().splitlines()[0].lstrip("# ").strip() + ")"
    return None


# ---------------------------------------------------------------------------------------------
# thin probes
# ---------------------------------------------------------------------------------------------
def run_tool(argv: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a tool, or None when it is not installed; raises RuntimeError when it fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        raise RuntimeError(first[:160])
    return done.stdout


def tegrastats_sample(interval_ms: int = 200, timeout: float = 3.0) -> str | None:
    """The first line tegrastats prints, then stop it (it runs until killed)."""
    if shutil.which("tegrastats") is None:
        return None
    proc = subprocess.Popen(["tegrastats", "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        import selectors

        sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"no output within {timeout:g} s")
        return proc.stdout.readline()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _probe(probes: dict[str, str], name: str, fn: Callable[[], Any]) -> Any:
    """Run one probe; record ok / missing / failed in ``probes``; never raise."""
    try:
        value = fn()
    except Exception as exc:  # a broken tool must never stop a benchmark
        probes[name] = f"failed: {' '.join(str(exc).split())[:160]}"
        return None
    probes[name] = "missing" if value is None else "ok"
    return value


def capture_host() -> dict[str, Any]:
    cpu = parse_cpuinfo(_read("/proc/cpuinfo") or "") or platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version()}


def capture_versions() -> dict[str, Any]:
    """Library versions without importing them; CUDA/cuDNN only from an already imported torch."""
    versions: dict[str, Any] = dict(library_versions())
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch_cuda"] = getattr(torch.version, "cuda", None)
        try:
            versions["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        except Exception:  # cudnn probing must never fail a run
            versions["cudnn"] = None
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        try:
            versions["onnxruntime_providers"] = list(ort.get_available_providers())
        except Exception:
            pass
    return versions


def capture_gpu_nvml() -> list[dict[str, Any]] | None:
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)

            def get(fn: Callable[..., Any], *args: Any, handle: Any = handle) -> Any:
                try:
                    value = fn(handle, *args) if handle is not None else fn(*args)
                except Exception:  # NVML raises NotSupported per field on some boards
                    return None
                return value.decode() if isinstance(value, bytes) else value

            def system(fn: Callable[[], Any]) -> Any:
                return get(fn, handle=None)

            mask = get(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)
            power = get(pynvml.nvmlDeviceGetPowerUsage)
            limit = get(pynvml.nvmlDeviceGetEnforcedPowerLimit)
            pstate = get(pynvml.nvmlDeviceGetPerformanceState)
            gpu = {
                "name": get(pynvml.nvmlDeviceGetName),
                "driver": system(pynvml.nvmlSystemGetDriverVersion),
                "pstate": f"P{pstate}" if pstate is not None else None,
                "clocks_mhz": {
                    "sm": get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
                    "mem": get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
                    "max_sm": get(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
                    "max_mem": get(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
                    "applications_graphics": get(pynvml.nvmlDeviceGetApplicationsClock, pynvml.NVML_CLOCK_GRAPHICS),
                },
                "power_w": {"draw": power / 1000 if power is not None else None,
                            "limit": limit / 1000 if limit is not None else None},
                "temperature_c": get(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
                "source": "nvml",
            }
            if mask is not None:
                gpu["throttle_mask"] = int(mask)
                gpu["throttle_reasons"] = decode_throttle_reasons(int(mask))
            gpus.append(gpu)
        return gpus
    finally:
        pynvml.nvmlShutdown()


def capture_gpu_smi() -> list[dict[str, Any]] | None:
    text = run_tool(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    if text is None:
        return None
    gpus = parse_nvidia_smi_csv(text)
    for gpu in gpus:
        gpu["source"] = "nvidia-smi"
    return gpus


def capture_gpu(probes: dict[str, str]) -> dict[str, Any] | None:
    """The first GPU by NVML (pynvml) or, failing that, nvidia-smi; None when neither is there."""
    gpus = _probe(probes, "pynvml", capture_gpu_nvml)
    if not gpus:
        gpus = _probe(probes, "nvidia-smi", capture_gpu_smi)
    if not gpus:
        return None
    first = dict(gpus[0])
    if len(gpus) > 1:
        first["other_gpus"] = [g.get("name") for g in gpus[1:]]
    return first


def capture_jetson(probes: dict[str, str]) -> dict[str, Any] | None:
    board = detect_jetson(_read("/proc/device-tree/model"), _read("/etc/nv_tegra_release"))
    if board is None and shutil.which("nvpmodel") is None:
        return None
    jetson: dict[str, Any] = {"board": board, "l4t": (_read("/etc/nv_tegra_release") or "").strip().splitlines()[:1]}
    text = _probe(probes, "nvpmodel", lambda: run_tool(["nvpmodel", "-q"]))
    jetson["nvpmodel"] = parse_nvpmodel(text) if text else None
    text = _probe(probes, "jetson_clocks", lambda: run_tool(["jetson_clocks", "--show"]))
    if text:
        clocks = parse_jetson_clocks(text)
        locked, why = clocks_locked(clocks)
        jetson["clocks"] = clocks
        jetson["clocks_locked"] = locked
        jetson["clocks_unlocked_because"] = why
    else:
        jetson["clocks"] = None
        jetson["clocks_locked"] = None
    line = _probe(probes, "tegrastats", tegrastats_sample)
    jetson["tegrastats"] = {"line": line.strip(), **parse_tegrastats(line)} if line else None
    return jetson


def environment_warnings(env: dict[str, Any]) -> list[str]:
    """Conditions under which numbers are not comparable: unlocked Jetson clocks, a throttling GPU."""
    warnings = []
    jetson = env.get("jetson")
    if jetson:
        if jetson.get("clocks_locked") is False:
            warnings.append("Jetson clocks are not locked (" + "; ".join(jetson.get("clocks_unlocked_because") or [])
                            + "): run `sudo nvpmodel -m <mode>` and `sudo jetson_clocks` before benchmarking")
        elif jetson.get("clocks_locked") is None:
            warnings.append("Jetson clock state unknown (jetson_clocks --show unavailable; it may need sudo)")
    gpu = env.get("gpu")
    if gpu:
        slow = [r for r in gpu.get("throttle_reasons") or [] if r in SLOWDOWN_REASONS]
        if slow:
            warnings.append(f"GPU is throttling ({', '.join(slow)}): numbers are lower than the GPU can do; "
                            "check cooling and power limits")
    return warnings


def capture_environment(target: str, *, gpu: bool = True, jetson: bool = True) -> dict[str, Any]:
    """The ``environment`` block of a result file."""
    probes: dict[str, str] = {}
    env: dict[str, Any] = {
        "host": capture_host(),
        "versions": capture_versions(),
        "gpu": capture_gpu(probes) if gpu else None,
        "jetson": capture_jetson(probes) if jetson else None,
        "target": target,
        "power_mode": None,
        "tensorrt": None,
    }
    env["tensorrt"] = env["versions"].get("tensorrt")
    jet = env["jetson"]
    # Only Jetson has a power mode that a user sets (nvpmodel). A desktop GPU's pstate follows the load
    # (P8 idle, P0 busy), so it stays in ``gpu`` and never makes the regression gate refuse a comparison.
    if jet and jet.get("nvpmodel"):
        env["power_mode"] = jet["nvpmodel"].get("name")
    env["probes"] = probes
    env["warnings"] = environment_warnings(env)
    return env
