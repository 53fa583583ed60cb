"""``edgeresnet --help`` stays light: the CLI imports torch, ONNX, ONNX Runtime and TensorRT only inside the
commands that use them, so help, usage errors and the gate run in a fraction of a second and on machines
without those packages (a Jetson without torch, a CI box without TensorRT)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "tensorrt", "tensorrt_rtx")

PROBE = """
import json, sys
from edgeresnet.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(HEAVY)))
print("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


def loaded_after(*argv: str) -> dict:
    """Run the app's entry point in a fresh interpreter and report which heavy packages it left imported."""
    proc = subprocess.run([sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[-1][len("PROBE "):])


@pytest.mark.parametrize("argv", [["--help"], ["build", "--help"], ["benchmark", "--help"], ["regress", "--help"]])
def test_help_imports_no_heavy_package(argv) -> None:
    result = loaded_after(*argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"edgeresnet {' '.join(argv)} imported {result['heavy']}"
