"""Environment capture: pure parsers on tool output samples, and probes that never fail a benchmark."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgeresnet.bench import environment as env

DATA = Path(__file__).parent / "data" / "env"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_nvidia_smi_csv_two_gpus():
    gpus = env.parse_nvidia_smi_csv(text("nvidia_smi.csv"))
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 3060 Laptop GPU"]
    h100, laptop = gpus
    assert h100["driver"] == "550.54.15" and h100["pstate"] == "P0"
    assert h100["clocks_mhz"] == {"sm": 1980, "mem": 2619, "max_sm": 1980, "max_mem": 2619, "applications_graphics": 1755}
    assert h100["power_w"] == {"draw": 121.43, "limit": 700.0}
    assert h100["throttle_reasons"] == [] and h100["temperature_c"] == 41
    assert laptop["clocks_mhz"]["applications_graphics"] is None  # [N/A]
    assert laptop["throttle_mask"] == 0x24
    assert laptop["throttle_reasons"] == ["SwPowerCap", "SwThermalSlowdown"]


def test_throttle_reason_bits():
    assert env.decode_throttle_reasons(0) == []
    assert env.decode_throttle_reasons(0x1 | 0x40) == ["GpuIdle", "HwThermalSlowdown"]
    assert env.decode_throttle_reasons(0x1000) == ["0x1000"]


def test_nvpmodel_query():
    assert env.parse_nvpmodel(text("nvpmodel_orin_nano.txt")) == {"name": "MAXN_SUPER", "id": 2}
    assert env.parse_nvpmodel("NVPM ERROR: failed to read PARAM\n") is None


def test_jetson_clocks_unlocked_agx_orin():
    clocks = env.parse_jetson_clocks(text("jetson_clocks_agx_orin_unlocked.txt"))
    assert clocks["soc_family"] == "tegra234"
    assert clocks["machine"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert clocks["cpus"]["cpu11"] == {"Online": 1, "Governor": "schedutil", "MinFreq": 115200, "MaxFreq": 2201600,
                                       "CurrentFreq": 1190400}
    assert clocks["gpu"] == {"MinFreq": 306000000, "MaxFreq": 1300500000, "CurrentFreq": 306000000}
    assert clocks["emc"]["FreqOverride"] == 0
    assert set(clocks["engines"]) == {"DLA0_CORE", "DLA0_FALCON", "DLA1_CORE", "DLA1_FALCON"}
    assert clocks["power_mode"] == "MAXN"
    locked, why = env.clocks_locked(clocks)
    assert not locked
    assert why[0] == "GPU MinFreq 306000000 != MaxFreq 1300500000"


def test_jetson_clocks_locked_orin_nano_and_nano():
    clocks = env.parse_jetson_clocks(text("jetson_clocks_orin_nano_locked.txt"))
    assert clocks["active_gpu_tpcs"] == 4 and clocks["power_mode"] == "MAXN_SUPER"
    assert env.clocks_locked(clocks) == (True, [])
    nano = env.parse_jetson_clocks(text("jetson_clocks_nano.txt"))
    assert nano["fan"] == "PWM=255"
    assert env.clocks_locked(nano) == (True, [])  # offline cores do not count
    assert env.clocks_locked({"cpus": {}}) == (False, ["no clock lines found"])


def test_tegrastats_nano_line():
    parsed = env.parse_tegrastats(text("tegrastats_nano.txt"))
    assert parsed["ram_mb"] == {"used": 1689, "total": 3956}
    assert parsed["cpu"] == [{"load_pct": 11, "mhz": 1479}, None, None, {"load_pct": 5, "mhz": 1479}]
    assert parsed["emc"] == {"load_pct": 3, "mhz": 1600}
    assert parsed["gpu"] == {"load_pct": 76, "mhz": 921}
    assert parsed["temperature_c"]["GPU"] == 39.5 and parsed["temperature_c"]["thermal"] == 40.25
    assert parsed["power_mw"]["POM_5V_IN"] == {"mw": 4321, "avg_mw": 4100}


def test_tegrastats_orin_line():
    parsed = env.parse_tegrastats(text("tegrastats_orin_nano.txt"))
    assert len(parsed["cpu"]) == 6
    assert parsed["gpu"] == {"load_pct": 88, "mhz": [1020, 1020]}
    assert "cv0" not in parsed["temperature_c"]  # -256C means the sensor is off
    assert parsed["temperature_c"]["tj"] == 48.8
    assert parsed["power_mw"]["VDD_IN"] == {"mw": 11422, "avg_mw": 11390}
    assert "RAM" not in parsed["power_mw"] and "SWAP" not in parsed["power_mw"]


def test_cpuinfo_x86_and_arm():
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz\n"
    assert env.parse_cpuinfo(x86) == "Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz"
    nano = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nBogoMIPS\t: 38.40\n"
    assert env.parse_cpuinfo(nano) == "ARMv8 Processor rev 1 (v8l)"
    orin = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n"
    assert env.parse_cpuinfo(orin) == "ARM CPU part 0xd42 (implementer 0x41)"
    assert env.parse_cpuinfo("") is None


def test_detect_jetson():
    assert env.detect_jetson("NVIDIA Jetson Orin Nano Developer Kit\x00", None) == "NVIDIA Jetson Orin Nano Developer Kit"
    release = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"
    assert env.detect_jetson(None, release).startswith("Jetson (R35 (release), REVISION: 4.1")
    assert env.detect_jetson("QEMU Virtual Machine", None) is None


def test_environment_warnings():
    locked_gpu = {"gpu": {"throttle_reasons": ["GpuIdle"]}, "jetson": None}
    assert env.environment_warnings(locked_gpu) == []
    hot = {"gpu": {"throttle_reasons": ["SwThermalSlowdown", "SwPowerCap"]}, "jetson": None}
    assert "GPU is throttling (SwThermalSlowdown, SwPowerCap)" in env.environment_warnings(hot)[0]
    unlocked = {"gpu": None, "jetson": {"clocks_locked": False, "clocks_unlocked_because": ["GPU MinFreq 1 != MaxFreq 2"]}}
    assert "sudo jetson_clocks" in env.environment_warnings(unlocked)[0]


def test_capture_here_records_missing_tools_and_never_fails():
    captured = env.capture_environment("host-cpu")
    assert captured["host"]["cores"] >= 1 and captured["host"]["cpu"]
    assert captured["target"] == "host-cpu"
    assert captured["versions"]["edgeresnet"]
    for probe in ("pynvml", "nvidia-smi"):
        if probe in captured["probes"]:
            assert captured["probes"][probe] in ("ok", "missing") or captured["probes"][probe].startswith("failed")


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture()
def fake_board(tmp_path, monkeypatch):
    """Stand-in Jetson tools on PATH that print the recorded outputs; nvidia-smi fails like on a broken driver."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "nvpmodel", f"cat '{DATA / 'nvpmodel_orin_nano.txt'}'")
    _tool(bin_dir, "jetson_clocks", f"cat '{DATA / 'jetson_clocks_agx_orin_unlocked.txt'}'")
    _tool(bin_dir, "tegrastats", f"while true; do cat '{DATA / 'tegrastats_orin_nano.txt'}'; sleep 0.2; done")
    _tool(bin_dir, "nvidia-smi", "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\" >&2; exit 9")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_capture_with_board_tools(fake_board):
    captured = env.capture_environment("orin-nano")
    jetson = captured["jetson"]
    assert jetson["nvpmodel"] == {"name": "MAXN_SUPER", "id": 2}
    assert captured["power_mode"] == "MAXN_SUPER"
    assert jetson["clocks_locked"] is False
    assert jetson["tegrastats"]["gpu"]["load_pct"] == 88
    assert captured["probes"]["tegrastats"] == "ok"
    assert captured["probes"]["nvidia-smi"].startswith("failed: NVIDIA-SMI has failed")
    assert captured["gpu"] is None
    assert any("not locked" in w for w in captured["warnings"])
