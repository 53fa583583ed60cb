"""Extract the exact Python API of real TensorRT releases into edgeresnet/trt/api/trt-<ver>.json.

TensorRT itself cannot be installed on a GPU-less machine, but each release's pybind11 bindings are a
real ~1 MB wheel on PyPI. They only need about ten plain C entry points from libnvinfer & co. to be
importable, so we compile a stub library that defines those (returning NULL/0) under the expected
sonames, import the bindings against it in a subprocess and dump ``dir()`` of every class and enum.
The result is the list of names a release really has (class -> sorted attributes, enum -> members,
plus the members' integer values, which the recording fake in tests/fake_trt.py uses for flag bits);
tests/test_trt_api_contract.py checks the adapter against it.

Usage (about 1 s per release plus the download; needs pip, gcc and network access to PyPI):

    python tools/extract_trt_api.py                     # all releases in RELEASES
    python tools/extract_trt_api.py --only 10.3 11.4    # a subset
    python tools/extract_trt_api.py --rtx               # also the installed TensorRT-RTX bindings
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "edgeresnet" / "trt" / "api"

# list name -> exact PyPI requirement of the bindings wheel (checked with `pip index versions`)
RELEASES: dict[str, str] = {
    "8.6": "tensorrt-bindings==8.6.1",
    "10.0": "tensorrt-cu12-bindings==10.0.1",
    "10.3": "tensorrt-cu12-bindings==10.3.0",
    "10.7": "tensorrt-cu12-bindings==10.7.0.post1",
    "10.13": "tensorrt-cu12-bindings==10.13.3.9",
    "11.0": "tensorrt-cu12-bindings==11.0.0.114",
    "11.4": "tensorrt-cu12-bindings==11.4.0.106",
}

# The C entry points the bindings link against (`ldd`/`nm -D` of tensorrt.so in the binding wheels 8.6.1-11.4).
STUB_C = r"""
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
int getInferLibVersion(void) { return STUB_VERSION; }
/* TensorRT 8.6 also links the UFF and Caffe parsers (C++ symbols; their mangled names are valid C names). */
void *_ZN11nvuffparser15createUffParserEv(void) { return NULL; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void *self, const char *n, const void *d, int t, int l) {}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return NULL; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
"""

# Runs in the subprocess with LD_LIBRARY_PATH at the stubs; prints the JSON on stdout.
DUMP_PY = r"""
import json, sys, types
sys.path.insert(0, sys.argv[1])
import importlib
trt = importlib.import_module(sys.argv[2])

def public(names):
    return sorted(n for n in names if not n.startswith("_"))

def is_enum(obj):
    return isinstance(obj, type) and hasattr(obj, "__members__")

classes, enums, enum_values, functions, values = {}, {}, {}, [], []

def visit_class(qualname, cls, depth=0):
    if is_enum(cls):
        enums[qualname] = sorted(cls.__members__)
        enum_values[qualname] = {m: int(v) for m, v in cls.__members__.items()}
        return
    classes[qualname] = public(dir(cls))
    if depth < 2:
        for name in public(vars(cls)):
            inner = getattr(cls, name, None)
            if isinstance(inner, type) and inner.__module__ and "tensorrt" in inner.__module__:
                visit_class(qualname + "." + name, inner, depth + 1)

own = sys.argv[2].split(".")[0]
for name in public(dir(trt)):
    obj = getattr(trt, name)
    if isinstance(obj, types.ModuleType):
        continue
    if isinstance(obj, type):
        if (obj.__module__ or "").split(".")[0] in (own, "tensorrt", "tensorrt_bindings", "tensorrt_rtx_bindings"):
            visit_class(name, obj)
    elif callable(obj):
        functions.append(name)
    else:
        values.append(name)

print(json.dumps({"version": trt.__version__, "classes": classes, "enums": enums, "enum_values": enum_values,
                  "functions": sorted(functions), "values": sorted(values)}))
"""


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


def download_wheel(requirement: str, dest: Path) -> Path:
    """Fetch the manylinux x86_64 cp311 bindings wheel, nothing else."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", "-d", str(dest), requirement])
    name, version = requirement.split("==")
    stem = name.replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"{requirement}: no wheel downloaded into {dest}")
    return wheels[0]


def build_stubs(version: str, dest: Path) -> None:
    """Compile the stub into every library name the bindings of this major version load."""
    major = int(version.split(".")[0])
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    encoded = parts[0] * 10000 + parts[1] * 100 + parts[2]
    source = dest / "nvinfer_stub.c"
    source.write_text(STUB_C, encoding="utf-8")
    names = [f"libnvinfer.so.{major}", f"libnvonnxparser.so.{major}", f"libnvinfer_plugin.so.{major}"]
    if major == 8:
        names.append("libnvparsers.so.8")
    for soname in names:
        _run(["gcc", "-shared", "-fPIC", "-O0", f"-DSTUB_VERSION={encoded}", f"-Wl,-soname,{soname}",
              "-o", str(dest / soname), str(source)])


def extract(list_name: str, requirement: str, work: Path) -> dict[str, object]:
    wheel_dir = work / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = download_wheel(requirement, wheel_dir)
    unpacked = work / wheel.stem
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    stubs = work / f"stubs-{list_name}"
    stubs.mkdir(exist_ok=True)
    build_stubs(list_name, stubs)
    env = dict(os.environ, LD_LIBRARY_PATH=str(stubs))
    proc = _run([sys.executable, "-c", DUMP_PY, str(unpacked), "tensorrt_bindings"], env=env, cwd=str(work))
    data = json.loads(proc.stdout)
    data["source"] = {"requirement": requirement, "wheel": wheel.name,
                      "method": "bindings wheel loaded against a C stub of libnvinfer (tools/extract_trt_api.py)"}
    return data


def extract_installed_rtx() -> dict[str, object]:
    """TensorRT-RTX ships its real libraries on PyPI, so its installed module is dumped directly."""
    proc = _run([sys.executable, "-c", DUMP_PY, "", "tensorrt_rtx_bindings"])
    data = json.loads(proc.stdout)
    from importlib import metadata

    version = metadata.version("tensorrt-rtx-cu12-bindings")
    data["source"] = {"requirement": f"tensorrt-rtx-cu12-bindings=={version}",
                      "method": "installed tensorrt-rtx-cu12-bindings + tensorrt-rtx-cu12-libs (real libraries)"}
    return data


def write(name: str, data: dict[str, object]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"trt-{name}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="list names to extract (default: all)", default=None)
    parser.add_argument("--rtx", action="store_true", help="also dump the installed TensorRT-RTX bindings")
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: temporary)")
    args = parser.parse_args(argv)
    selected = args.only if args.only is not None else list(RELEASES)
    unknown = [n for n in selected if n not in RELEASES]
    if unknown:
        parser.error(f"unknown release(s) {unknown}; known: {', '.join(RELEASES)}")
    with tempfile.TemporaryDirectory(prefix="trtapi-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in selected:
            data = extract(name, RELEASES[name], work)
            path = write(name, data)
            print(f"{name}: {data['version']}: {len(data['classes'])} classes, "  # type: ignore[arg-type]
                  f"{len(data['enums'])} enums -> {path.relative_to(REPO)}")
        if args.rtx:
            data = extract_installed_rtx()
            rtx_name = "rtx-" + ".".join(str(data["version"]).split(".")[:2])
            path = write(rtx_name, data)
            print(f"{rtx_name}: {data['version']} -> {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
