"""The only code that calls ``tensorrt``: it applies a ``BuildPlan`` to the module it is given.

Nothing is decided here: ``plan_build`` chose every step; this module maps each step to TensorRT calls,
enum members by *name* (``getattr(trt.BuilderFlag, name)``), so one code path serves TensorRT 8.6 to
11.x and TensorRT-RTX (its differences live in ``rtx.py``). The module is injected (``load_trt``
imports it lazily), which is how tests drive the adapter with a recording fake built from the real
bindings' name lists (``edgeresnet/trt/api/trt-<ver>.json``).

Every TensorRT name used on a version's code path is declared in ``NAMES_USED``; the contract test
AST-scans this file, ``rtx.py`` and ``runtime.py`` and checks that (a) each name found is declared and
(b) each declared name exists in the real bindings of every release the group applies to. Objects
returned by TensorRT are held in variables named after their class (``VARIABLE_CLASSES``) so the scan can
tell which class a method belongs to.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt import rtx

INSTALL_HINT = (
    "install TensorRT (JetPack's python3-libnvinfer on Jetson, pip install tensorrt-cu12 on a GPU host) "
    "or the CPU-only builder: " + rtx.INSTALL_HINT
)

# -- the TensorRT names this layer uses, by code path ---------------------------------------------

#: group -> "Class", "Class.attribute" or "Enum.MEMBER". Which releases a group applies to: GROUP_APPLIES.
NAMES_USED: dict[str, list[str]] = {
    # every release and TensorRT-RTX
    "common": [
        "Builder", "Builder.build_serialized_network", "Builder.create_builder_config", "Builder.create_network",
        "Builder.create_optimization_profile",
        "BuilderFlag",
        "EngineInspector.get_engine_information",
        "ICudaEngine.create_engine_inspector", "ICudaEngine.create_execution_context",
        "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_name",
        "ICudaEngine.get_tensor_profile_shape", "ICudaEngine.get_tensor_shape", "ICudaEngine.num_io_tensors",
        "IExecutionContext.execute_async_v3", "IExecutionContext.get_tensor_shape",
        "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
        "IBuilderConfig.add_optimization_profile", "IBuilderConfig.profiling_verbosity", "IBuilderConfig.set_flag",
        "IBuilderConfig.set_memory_pool_limit",
        "ILogger", "ILogger.Severity", "ILogger.log",
        "INetworkDefinition.num_inputs", "INetworkDefinition.num_outputs",
        "IOptimizationProfile.set_shape",
        "LayerInformationFormat.JSON",
        "MemoryPoolType", "MemoryPoolType.WORKSPACE",
        "NetworkDefinitionCreationFlag",
        "OnnxParser", "OnnxParser.get_error", "OnnxParser.num_errors", "OnnxParser.parse_from_file",
        "ParserError.code", "ParserError.desc", "ParserError.node",
        "ProfilingVerbosity", "ProfilingVerbosity.DETAILED",
        "Runtime", "Runtime.deserialize_cuda_engine", "Runtime.engine_host_code_allowed",
        "TensorIOMode.INPUT",
        "nptype",
    ],
    # TensorRT 8.x/9.x need the explicit-batch flag for ONNX; the member is gone in 11
    "explicit_batch": ["NetworkDefinitionCreationFlag.EXPLICIT_BATCH"],
    # strongly typed networks (TensorRT >= 9.1, TensorRT-RTX)
    "strong": ["NetworkDefinitionCreationFlag.STRONGLY_TYPED"],
    # the weakly typed precision flags plan_build may ask for (TensorRT < 11)
    "weak": ["BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "BuilderFlag.DIRECT_IO"],
    # implicit INT8 calibration (TensorRT < 11)
    "calibrator": [
        "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
        "IInt8EntropyCalibrator2.get_batch", "IInt8EntropyCalibrator2.get_batch_size",
        "IInt8EntropyCalibrator2.read_calibration_cache", "IInt8EntropyCalibrator2.write_calibration_cache",
        "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
    ],
    # DLA (TensorRT on Jetson; the names exist on every TensorRT release)
    "dla": [
        "DeviceType.DLA", "IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type", "BuilderFlag.GPU_FALLBACK",
        "Runtime.DLA_core",
    ],
    # TensorRT < 8.4 (the plan uses it only there; 8.6 is the oldest release we can check)
    "max_workspace": ["IBuilderConfig.max_workspace_size"],
    # ParserError names the node itself from TensorRT 10 (8.6 has only the node index)
    "parser_node_name": ["ParserError.node_name", "ParserError.node_operator"],
    # portability options (TensorRT >= 8.6)
    "portability": [
        "BuilderFlag.VERSION_COMPATIBLE", "HardwareCompatibilityLevel", "HardwareCompatibilityLevel.AMPERE_PLUS",
        "IBuilderConfig.builder_optimization_level", "IBuilderConfig.hardware_compatibility_level",
    ],
    # SAME_COMPUTE_CAPABILITY hardware compatibility (TensorRT >= 10.9)
    "same_cc": ["HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"],
    # timing cache (TensorRT; a no-op in TensorRT-RTX, so it is not called there)
    "timing_cache": [
        "IBuilderConfig.create_timing_cache", "IBuilderConfig.get_timing_cache", "IBuilderConfig.set_timing_cache",
        "ITimingCache.serialize",
    ],
    # TensorRT-RTX only: build for the target's compute capability
    "rtx": list(rtx.NAMES_USED),
}


def _tensorrt(version: tuple[int, ...], flavor: str, lo: tuple[int, ...] = (0,), hi: tuple[int, ...] = (99,)) -> bool:
    return flavor == "tensorrt" and lo <= version < hi


#: group -> predicate(version, flavor): the releases whose code path uses the group's names
GROUP_APPLIES: dict[str, Callable[[tuple[int, ...], str], bool]] = {
    "common": lambda v, f: True,
    "explicit_batch": lambda v, f: _tensorrt(v, f, hi=(11,)),
    "strong": lambda v, f: f == "rtx" or _tensorrt(v, f, lo=(9, 1)),
    "weak": lambda v, f: _tensorrt(v, f, hi=(11,)),
    "calibrator": lambda v, f: _tensorrt(v, f, hi=(11,)),
    "dla": lambda v, f: _tensorrt(v, f),
    "max_workspace": lambda v, f: _tensorrt(v, f, hi=(10,)),
    "parser_node_name": lambda v, f: f == "rtx" or _tensorrt(v, f, lo=(10,)),
    "portability": lambda v, f: _tensorrt(v, f, lo=(8, 6)),
    "same_cc": lambda v, f: _tensorrt(v, f, lo=(10, 9)),
    "timing_cache": lambda v, f: _tensorrt(v, f),
    "rtx": lambda v, f: f == "rtx",
}

#: step op -> the enum its name argument is looked up in (names come from the plan, not from this file)
PLAN_ENUMS: dict[str, tuple[str, str]] = {
    "set_flag": ("BuilderFlag", "flag"),
    "memory_pool": ("MemoryPoolType", "pool"),
    "profiling_verbosity": ("ProfilingVerbosity", "level"),
    "hardware_compatibility": ("HardwareCompatibilityLevel", "level"),
}

#: variable name -> the TensorRT class of the object it holds (the convention the contract test relies on)
VARIABLE_CLASSES: dict[str, str] = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "parser_error": "ParserError",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "timing_cache": "ITimingCache",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",
}

# -- loading the module ---------------------------------------------------------------------------


def _import_tensorrt() -> tuple[ModuleType | None, str]:
    """``tensorrt`` (or the bare ``tensorrt_bindings``), or None with the reason it is unusable."""
    reasons: list[str] = []
    for name in ("tensorrt", "tensorrt_bindings"):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            text = " ".join(str(exc).split())
            if "No module named" not in text:
                reasons.append(f"import {name}: {text[:160]}")
            continue
        except OSError as exc:
            reasons.append(f"import {name}: {' '.join(str(exc).split())[:160]}")
            continue
        if not hasattr(module, "Builder"):
            # tensorrt-stubs installs an empty namespace package: `import tensorrt` succeeds
            # (github.com/sync-dev-org/tensorrt-stubs ships tensorrt/__init__.pyi and no module)
            reasons.append(f"{name} is a stub-only package without the bindings (uninstall tensorrt-stubs)")
            continue
        return module, ""
    return None, "; ".join(reasons) or "tensorrt is not installed"


def load_trt(builder: str = "auto") -> ModuleType:
    """The TensorRT module to use: ``tensorrt``, ``rtx`` (TensorRT-RTX) or ``auto`` (TensorRT, else RTX)."""
    if builder not in ("auto", "tensorrt", "rtx"):
        raise UserError(f"--builder {builder!r}: choose auto, tensorrt or rtx")
    reason = ""
    if builder in ("auto", "tensorrt"):
        module, reason = _import_tensorrt()
        if module is not None:
            return module
        if builder == "tensorrt":
            raise UserError(f"TensorRT is not usable here ({reason}); {INSTALL_HINT}")
    module = rtx.import_rtx()
    if module is not None:
        return module
    if builder == "rtx":
        raise UserError(f"--builder rtx: TensorRT-RTX is not installed; {rtx.INSTALL_HINT}")
    raise UserError(f"neither TensorRT nor TensorRT-RTX is importable ({reason}); {INSTALL_HINT}")


def trt_flavor(trt: Any) -> str:
    """``"rtx"`` for TensorRT-RTX, else ``"tensorrt"``."""
    return "rtx" if rtx.is_rtx(trt) else "tensorrt"


def trt_version(trt: Any) -> tuple[int, int, int]:
    """``__version__`` as (major, minor, patch): "10.7.0.post1" -> (10, 7, 0), "1.7.1.116" -> (1, 7, 1)."""
    text = str(getattr(trt, "__version__", ""))
    numbers = [int(n) for n in re.findall(r"\d+", text.split("post")[0])[:3]]
    if not numbers:
        raise UserError(f"{getattr(trt, '__name__', 'tensorrt')}: no usable __version__ ({text!r}); reinstall TensorRT")
    numbers += [0] * (3 - len(numbers))
    return (numbers[0], numbers[1], numbers[2])


def trt_label(trt: Any) -> str:
    prefix = "TensorRT-RTX" if trt_flavor(trt) == "rtx" else "TensorRT"
    return f"{prefix} {getattr(trt, '__version__', '?')}"


def features_for(trt: Any, **options: Any) -> Any:
    """The ``TrtFeatures`` of the given module (TensorRT-RTX has its own table, not TensorRT 1.x's)."""
    from edgeresnet.trt.features import TrtFeatures

    if trt_flavor(trt) == "rtx":
        return TrtFeatures.for_rtx(trt_version(trt))
    return TrtFeatures.for_version(trt_version(trt), **options)


# -- logging --------------------------------------------------------------------------------------

SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


def _severity_name(severity: Any) -> str:
    name = getattr(severity, "name", None)
    if isinstance(name, str):
        return name
    text = str(severity)
    return text.rsplit(".", 1)[-1]


def make_logger(trt: Any, min_severity: str = "INFO") -> Any:
    """A ``trt.ILogger`` subclass instance that records ``(severity name, message)`` pairs in ``.messages``.

    The class is made from the injected module, so it subclasses the real ILogger (or the fake's)."""
    if min_severity not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {SEVERITIES}")
    keep = set(SEVERITIES[: SEVERITIES.index(min_severity) + 1])
    base = trt.ILogger

    class RecordingLogger(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the base __init__
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            name = _severity_name(severity)
            if name in keep:
                self.messages.append((name, str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("INTERNAL_ERROR", "ERROR")]

    return RecordingLogger()


def logged_messages(logger: Any) -> list[tuple[str, str]]:
    return list(getattr(logger, "messages", []))


def classify_failure(logger: Any, source: str, rebuild: str | None = None) -> UserError:
    """The logged reason of a failed load or CUDA start as trt-core's one-line ``EngineLoadError``."""
    from edgeresnet.trt.errors import classify_trt_messages

    return classify_trt_messages(logged_messages(logger), engine=source, rebuild=rebuild)


# -- building -------------------------------------------------------------------------------------

_NOISE = ("catchCudaError", "cudaError 35")  # CPU-only builders append the missing-driver error to parser errors


def _clean_line(line: str) -> str:
    """``... Error Code 4: API Usage Error (detail. In checkType at /x.cpp:456)`` -> ``detail``."""
    text = line.strip()
    match = re.search(r"Error Code \d+: [^(]*\((.*?)(?:\.? In \w+ at [^)]*)?\)\s*$", text)
    if match:
        text = match.group(1)
    text = re.sub(r"^\[\d+\]\s*", "", text)
    text = re.sub(r"^Assertion failed: [^:]+: ", "", text)  # the C++ expression says nothing to a user
    return text.rstrip(".")


def _error_lines(text: str) -> list[str]:
    out: list[str] = []
    for line in str(text).splitlines():
        if not line.strip() or any(n in line for n in _NOISE):
            continue
        cleaned = _clean_line(line)
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out


def _onnx_node_label(onnx_path: str, index: int) -> str | None:
    """TensorRT 8.6's ParserError has only the node index: read the node's name from the ONNX graph."""
    try:
        from edgeresnet.export.onnx_meta import load_onnx_model

        graph = load_onnx_model(onnx_path).graph
        node = graph.node[index]
    except Exception:  # a file TensorRT could not parse may not load here either
        return None
    return node.name or f"#{index} {node.op_type}"


def _parser_failure(trt: Any, parser: Any, onnx_path: str) -> UserError:
    """The first parser error as one line naming the ONNX file and the failing node."""
    count = int(parser.num_errors)
    parser_error = parser.get_error(0) if count else None
    if parser_error is None:
        return UserError(f"{onnx_path}: {trt_label(trt)} could not parse the model (no error reported); "
                         "re-export it with edgeresnet export")
    code = _severity_name(parser_error.code())
    index = int(parser_error.node())
    node_name = operator = ""
    if hasattr(parser_error, "node_name"):  # TensorRT >= 10, RTX
        node_name = str(parser_error.node_name() or "")
        operator = str(parser_error.node_operator() or "")
    elif index >= 0:
        node_name = _onnx_node_label(onnx_path, index) or ""
    lines = _error_lines(parser_error.desc())
    detail = "; ".join(lines[:2]) or code
    more = f" (+{count - 1} more)" if count > 1 else ""
    if index < 0 or code == "MODEL_DESERIALIZE_FAILED":
        where = "the file"
        if code == "MODEL_DESERIALIZE_FAILED":
            hint = "it is not a readable ONNX model; re-export it with edgeresnet export"
        else:
            hint = "check the path and re-export it with edgeresnet export"
    else:
        where = f"node {node_name or '#' + str(index)}" + (f" ({operator})" if operator else "")
        if "Int32" in detail and (operator == "DequantizeLinear" or "bias" in node_name):
            hint = ("TensorRT takes Q/DQ models with float biases; re-quantize without bias quantization "
                    "(ONNX Runtime: extra_options={'QuantizeBias': False}, as edgeresnet calibrate does)")
        elif code.startswith("UNSUPPORTED"):
            hint = f"{trt_label(trt)} does not support this operator; re-export without it or with a lower --opset"
        else:
            hint = "re-export the model with edgeresnet export"
    return UserError(f"{onnx_path}: {trt_label(trt)} cannot parse {where}: {detail} [{code}]{more}; {hint}")


def _enum(trt: Any, enum_name: str, member: str, where: str) -> Any:
    """``getattr(trt.<enum>, member)`` with a one-line error when this release lacks the member."""
    enum = getattr(trt, enum_name)
    try:
        return getattr(enum, member)
    except AttributeError:
        raise UserError(
            f"{where}: {trt_label(trt)} has no {enum_name}.{member}; the build plan was made for another "
            "TensorRT release, re-plan with the installed one"
        ) from None


class _Build:
    """The TensorRT objects of one build, created by the steps in plan order."""

    def __init__(self, trt: Any, plan: Any, logger: Any) -> None:
        self.trt = trt
        self.plan = plan
        self.logger = logger
        self.builder: Any = None
        self.network: Any = None
        self.config: Any = None
        self.parser: Any = None
        self.profile: Any = None
        self.calibrator: Any = None  # must outlive the build
        self.timing_cache: Any = None  # "must not be destroyed until after the engine is built"
        # (IBuilderConfig.create_timing_cache docstring, TRT@v10.3.0:python/docstrings/infer/pyCoreDoc.h)
        self.timing_cache_path: Path | None = None
        self.serialized: bytes | None = None
        self.notes: list[str] = []
        self.warnings: list[str] = []  # problems that do not stop the build (a rejected cache, ...)
        self.calibration: CalibrationInput | None = None  # checked before any TensorRT object exists

    @property
    def onnx(self) -> str:
        return str(self.plan.spec.onnx)

    def fail(self, what: str) -> UserError:
        """A failed build: the first logged error that is not CPU-only CUDA noise, else the classified log."""
        errors = [m for severity, m in logged_messages(self.logger) if severity in ("INTERNAL_ERROR", "ERROR")]
        lines = [line for m in errors for line in _error_lines(m)]
        if not lines:
            return classify_failure(self.logger, self.onnx)
        return UserError(f"{self.onnx}: {trt_label(self.trt)} {what}: {'; '.join(lines[:2])[:300]}")

    # -- step handlers: step_<op> for each plan op --------------------------------------------------
    def step_create_network(self, strongly_typed: bool = False, explicit_batch_flag: bool = False, **_: Any) -> None:
        trt = self.trt
        try:
            builder = trt.Builder(self.logger)
        except TypeError as exc:  # "pybind11::init(): factory function returned nullptr" without CUDA
            # (github.com/NVIDIA/TensorRT/issues/2913)
            raise classify_failure(self.logger, self.onnx) from exc
        if rtx.is_rtx(trt):
            flags = rtx.network_flags(trt)
        else:
            flags = 0
            if strongly_typed:
                flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if explicit_batch_flag:
                flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        config = builder.create_builder_config()
        if rtx.is_rtx(trt) and self.plan.device is not None:
            chosen = rtx.set_target_compute_capability(trt, config, self.plan.device.compute_capability)
            self.notes.append(f"TensorRT-RTX target: {chosen or 'default compute capabilities'}")
        self.builder, self.network, self.config = builder, network, config

    def step_parse_onnx(self, path: str, **_: Any) -> None:
        trt = self.trt
        onnx_path = str(path)
        if not Path(onnx_path).is_file():
            raise UserError(f"{onnx_path}: ONNX file not found; check the path or run edgeresnet export first")
        parser = trt.OnnxParser(self.network, self.logger)
        self.parser = parser
        if not parser.parse_from_file(onnx_path):
            raise _parser_failure(trt, parser, onnx_path)
        network = self.network
        if int(network.num_inputs) == 0 or int(network.num_outputs) == 0:
            raise UserError(
                f"{onnx_path}: parsed to an empty network ({network.num_inputs} inputs, {network.num_outputs} outputs); "
                "it is not an ONNX model, re-export it with edgeresnet export"
            )

    def step_max_workspace(self, bytes: int, **_: Any) -> None:  # noqa: A002 - the plan's argument name
        self.config.max_workspace_size = int(bytes)

    def step_memory_pool(self, pool: str, bytes: int, **_: Any) -> None:  # noqa: A002
        config = self.config
        config.set_memory_pool_limit(_enum(self.trt, "MemoryPoolType", pool, "--workspace"), int(bytes))

    def step_set_flag(self, flag: str, **_: Any) -> None:
        config = self.config
        config.set_flag(_enum(self.trt, "BuilderFlag", flag, "build flag"))

    def step_dla(self, core: int, **_: Any) -> None:
        trt, config = self.trt, self.config
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(core)

    def step_profile(self, input: str, min: list[int], opt: list[int], max: list[int], **_: Any) -> None:  # noqa: A002
        builder, config = self.builder, self.config
        profile = builder.create_optimization_profile()
        profile.set_shape(input, tuple(min), tuple(opt), tuple(max))
        index = config.add_optimization_profile(profile)
        if index is not None and int(index) < 0:
            raise UserError(f"--batch {min[0]}:{opt[0]}:{max[0]}: {trt_label(self.trt)} rejected the optimization "
                            f"profile for input {input!r} {list(min)}..{list(max)}; check the input name and shape")
        self.profile = profile

    def step_calibrator(self, kind: str, cache: str | None = None, data: str | None = None, input: str = "input",  # noqa: A002
                        batch_size: int = 1, calibration_profile: bool = False, **_: Any) -> None:
        config = self.config
        prepared = self.calibration
        if prepared is None:  # build_engine prepares it; a caller driving the steps itself gets the same checks
            step = self.plan.find("calibrator")
            prepared = self.calibration = prepare_calibration(self.trt, step.args if step else {})
        self.calibrator = make_calibrator(self.trt, kind, cache=cache, batches=prepared.batches,
                                          batch_size=int(batch_size), input_name=input, backend=prepared.backend,
                                          cache_bytes=prepared.cache_bytes, use_cache_file=False)
        config.int8_calibrator = self.calibrator
        if calibration_profile and self.profile is not None:
            config.set_calibration_profile(self.profile)

    def step_timing_cache(self, path: str, key: str | None = None, ignore_mismatch: bool = False, **_: Any) -> None:
        if rtx.is_rtx(self.trt) and not rtx.SUPPORTS_TIMING_CACHE:
            self.notes.append("timing cache skipped: a no-op in TensorRT-RTX")
            return
        config = self.config
        target = Path(path)
        if target.is_dir():
            target = target / f"{key or 'timing'}.cache"
        blob = target.read_bytes() if target.is_file() else b""
        logged = len(logged_messages(self.logger))
        timing_cache = config.create_timing_cache(blob)
        unreadable = [m for _, m in logged_messages(self.logger)[logged:] if "timing cache" in m.lower()
                      or "magic tag" in m.lower()]
        if timing_cache is None or (blob and unreadable):
            # TensorRT-RTX 1.7.1 (run here) logs "Failed to deserialize timing cache. Returning an empty timing
            # cache." and returns an empty one; saving that would overwrite the user's file: build without it.
            self.warnings.append(f"--timing-cache {target}: {trt_label(self.trt)} could not read it (another "
                                 "TensorRT's format, or damaged); built without it and left the file unchanged "
                                 "(delete it to start a new one)")
            return
        # pyCoreDoc.h set_timing_cache: "A failure will be reported if the CUDA device property in the provided
        # cache is different from current environment"; ":returns: A `BOOL` indicating whether the operation is
        # done successfully". False = not attached: build without it, keep the file, never save over it.
        if config.set_timing_cache(timing_cache, bool(ignore_mismatch)) is False:
            self.warnings.append(f"--timing-cache {target}: {trt_label(self.trt)} rejected it (written by another GPU "
                                 "or TensorRT); built without it and left the file unchanged (delete it to start a new one)")
            return
        self.timing_cache, self.timing_cache_path = timing_cache, target

    def step_profiling_verbosity(self, level: str = "DETAILED", **_: Any) -> None:
        config = self.config
        config.profiling_verbosity = _enum(self.trt, "ProfilingVerbosity", level, "profiling verbosity")

    def step_builder_optimization_level(self, level: int, **_: Any) -> None:
        config = self.config
        config.builder_optimization_level = int(level)

    def step_hardware_compatibility(self, level: str, **_: Any) -> None:
        config = self.config
        config.hardware_compatibility_level = _enum(self.trt, "HardwareCompatibilityLevel", level, "--hardware-compat")

    def step_build(self, **_: Any) -> None:
        builder, network, config = self.builder, self.network, self.config
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if self.calibrator is not None:  # calibration is over: free its device buffer
                self.calibrator.release()
        if self.calibrator is not None:
            # TensorRT swallows what the calibrator raises (pyInt8.cpp prints it and reads "no more batches"),
            # so it is raised here, once the build returns, instead of TensorRT's generic "no scaling factors".
            self.calibrator.raise_failure()
            if self.calibrator.write_failure:
                self.warnings.append(self.calibrator.write_failure)
        if serialized is None:
            raise self.fail("engine build failed")
        self.serialized = bytes(memoryview(serialized))
        if not self.serialized:
            raise self.fail("engine build returned an empty plan")

    def save_timing_cache(self) -> str | None:
        """Write the timing cache back after the engine is safe on disk; a failure is a warning, never an error
        (pyCoreDoc.h get_timing_cache: "or `None` if no timing cache is set")."""
        if self.timing_cache_path is None:
            return None
        from edgeresnet.artifacts import atomic_output

        target = self.timing_cache_path
        try:
            config = self.config
            timing_cache = config.get_timing_cache()
            if timing_cache is None:
                return f"--timing-cache {target}: {trt_label(self.trt)} kept no timing cache; not saved"
            blob = bytes(memoryview(timing_cache.serialize()))
            with atomic_output(target, "--timing-cache") as tmp:
                tmp.write_bytes(blob)
        except Exception as exc:  # noqa: BLE001 - the engine is built; the cache is a bonus
            return f"--timing-cache {target}: not saved ({' '.join(str(exc).split())[:160] or exc.__class__.__name__})"
        return None


def check_timing_cache_file(path: str | Path, option: str = "--timing-cache") -> None:
    """Refuse, before the build, a ``--timing-cache`` file that is recognisably something else.

    TensorRT's timing-cache layout is not documented (it checks a magic tag: "Serialization assertion
    magicTagRead == kMAGIC_TAG failed"), so a cache cannot be proven valid here; what is refused is a file that
    is clearly another artifact: a TensorRT plan (tag ``ftrt``/``vtrt``, see planfile.py), a calibration cache or
    other text (a timing cache is binary), numpy/zip files (``.npy``, ``.npz``, ``.pt``) and ONNX protobuf.
    A missing or empty file starts a new cache."""
    from edgeresnet.trt.planfile import parse_plan_header

    p = Path(path)
    if not p.exists():
        return
    if not p.is_file():
        raise UserError(f"{option} {p}: not a file; pass a timing cache file or a directory for keyed caches")
    with p.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        return
    what = None
    if parse_plan_header(head, size=p.stat().st_size).is_plan:
        what = "a TensorRT engine"
    elif head.startswith(b"TRT-"):
        what = "an INT8 calibration cache (pass it as --calib-cache)"
    elif head.startswith(b"\x93NUMPY"):
        what = "a numpy array"
    elif head.startswith(b"PK\x03\x04"):
        what = "a zip archive (.npz or a PyTorch checkpoint)"
    elif len(head) > 2 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42):
        what = "an ONNX model"  # ModelProto: field 1 ir_version (varint), then producer/domain/graph fields
    elif b"\0" not in head:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            pass
    if what:
        raise UserError(f"{option} {p}: is {what}, not a TensorRT timing cache; pass the timing cache path "
                        "(a new one is created when the file does not exist)")


def check_plan_matches(trt: Any, plan: Any) -> None:
    """The plan must be for the module that builds it (same flavor and major.minor)."""
    features = plan.features
    flavor = trt_flavor(trt)
    version = trt_version(trt)
    if getattr(features, "flavor", "tensorrt") != flavor or tuple(features.version[:2]) != version[:2]:
        raise UserError(
            f"the build plan is for {features.version_string} but {trt_label(trt)} is installed; "
            "re-plan without --trt-version to build here, or use --emit-trtexec for the other release"
        )


def run_build(trt: Any, plan: Any, logger: Any = None, *, backend: Any = None) -> _Build:
    """Apply ``plan`` (a ``BuildPlan``) to the injected TensorRT module and return the build's state:
    ``.serialized`` (the engine bytes), ``.warnings`` and ``.save_timing_cache()``, which the caller runs once
    the engine is written, so that no cache problem can lose a built engine.

    Calibration inputs are checked first, before any TensorRT object exists. Parser errors name the ONNX and
    the first failing node; a None from ``build_serialized_network`` becomes a one-line UserError with the
    logged reason. Everything logged is in ``logger.messages``."""
    check_plan_matches(trt, plan)
    step = plan.find("calibrator")
    calibration = prepare_calibration(trt, step.args, backend=backend) if step is not None else None
    logger = logger if logger is not None else make_logger(trt)
    state = _Build(trt, plan, logger)
    if calibration is not None:
        state.calibration = calibration
        state.notes.extend(calibration.notes)
        state.warnings.extend(calibration.warnings)
    for step in plan.steps:
        handler = getattr(state, "step_" + step.op, None)
        if handler is None:
            raise ValueError(f"build step {step.op!r} has no adapter mapping")
        handler(**step.args)
    if state.serialized is None:
        raise ValueError("the build plan has no 'build' step")
    return state


def build_engine(trt: Any, plan: Any, logger: Any = None, *, backend: Any = None) -> bytes:
    """``run_build`` for callers that keep the bytes themselves: the timing cache is saved before returning
    and its problems, like every other warning, are appended to ``logger.messages`` as WARNING."""
    logger = logger if logger is not None else make_logger(trt)
    state = run_build(trt, plan, logger, backend=backend)
    problem = state.save_timing_cache()
    messages = getattr(logger, "messages", None)
    if isinstance(messages, list):
        messages.extend(("WARNING", w) for w in state.warnings + ([problem] if problem else []))
    return state.serialized  # type: ignore[return-value]


# -- INT8 calibration (weakly typed, TensorRT < 11) ----------------------------------------------


def calibration_batches(data: str, shape: list[int], batch_size: int, max_images: int) -> Iterator[Any]:
    """Preprocessed NCHW float32 batches for calibration from ``.npy``/``.npz`` images or a data spec
    (``digits`` or an ImageFolder, read with ``edgeresnet.data.load_data`` at the engine's image size).

    Everything is checked here, eagerly (file or folder exists, has images, image shape matches the network
    input); only the iterator it returns is lazy. A problem found inside ``get_batch`` would reach TensorRT,
    which swallows it (pyInt8.cpp) and fails with its generic "no scaling factors" error."""
    import numpy as np

    path = Path(data)
    where = f"--calib-data {data}"
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise UserError(f"{where}: file not found; check the path")
        try:
            loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                if not loaded.files:
                    raise UserError(f"{where}: the .npz holds no arrays; save the images as 'images'")
                key = "images" if "images" in loaded.files else loaded.files[0]
                images = loaded[key]
            else:
                images = loaded
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{where}: not a readable numpy file ({' '.join(str(exc).split())[:120]})") from exc
    else:
        from edgeresnet.compress.calibration import IMAGE_SUFFIXES
        from edgeresnet.data import load_data
        from edgeresnet.data.sources import in_memory_source

        if not in_memory_source(data):
            if not path.is_dir():
                raise UserError(f"{where}: no such folder (or .npy/.npz file); pass 'digits', 'fashion-mnist', an "
                                "ImageFolder or IDX "
                                "directory or a .npy/.npz of preprocessed NCHW images")
            if not any(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in path.rglob("*")):
                raise UserError(f"{where}: the folder has no images ({', '.join(IMAGE_SUFFIXES[:4])} ...); "
                                "add calibration images in class sub-folders")
        size = int(shape[-1]) if shape else 224
        try:
            images, _ = load_data(data, size).arrays("train", limit=max_images)
        except UserError as exc:
            raise UserError(f"{where}: {str(exc).split(': ', 1)[-1]}") from exc
        except ValueError as exc:  # np.stack of an empty split
            raise UserError(f"{where}: no calibration images could be read from the train split") from exc
    if getattr(images, "ndim", 0) != 4:
        raise UserError(f"{where}: images are {list(getattr(images, 'shape', []))}, expected N x C x H x W "
                        f"({list(shape[1:]) if shape else 'C x H x W'}); prepare them at the model's image size")
    if shape and tuple(images.shape[1:]) != tuple(shape[1:]):
        raise UserError(f"{where}: images are {list(images.shape[1:])}, the engine input is {list(shape[1:])}; "
                        "prepare them at the model's image size")
    count = min(len(images), int(max_images))
    if count < batch_size:
        raise UserError(f"{where}: {count} images, fewer than one batch of {batch_size}")

    def batches() -> Iterator[Any]:
        for start in range(0, count - batch_size + 1, batch_size):
            yield np.ascontiguousarray(np.asarray(images[start:start + batch_size], dtype=np.float32))

    return batches()


class CalibrationInput:
    """What the calibrator will serve, decided before the build: cache bytes or batches (+ device backend)."""

    def __init__(self, cache_bytes: bytes | None = None, batches: Iterator[Any] | None = None, backend: Any = None,
                 notes: list[str] | None = None, warnings: list[str] | None = None) -> None:
        self.cache_bytes, self.batches, self.backend = cache_bytes, batches, backend
        self.notes = notes or []
        self.warnings = warnings or []


def prepare_calibration(trt: Any, args: dict[str, Any], backend: Any = None) -> CalibrationInput:
    """Check the calibration cache and data of a ``calibrator`` step before any TensorRT object exists.

    A cache is used when its algorithm is this calibrator's; a header naming another TensorRT release is
    rewritten for the installed one (TensorRT skips a cache whose header is not its own: "trt will skip the
    file if it is incompatible", https://github.com/NVIDIA/TensorRT/issues/1378 -- and with a cache we pass
    no batches, so it would calibrate on nothing). A cache that cannot be used needs ``--calib-data``.
    Calibrating needs device memory: the backend is created here, first (pycuda's ``import pycuda.autoinit``
    makes the CUDA context, as NVIDIA's samples do before creating the builder)."""
    from edgeresnet.compress.calibration import CACHE_ALGORITHMS, read_trt_cache, trt_version_code

    kind = str(args.get("kind", "entropy2"))
    cache, data = args.get("cache"), args.get("data")
    algorithm = CACHE_ALGORITHMS.get(kind)
    if algorithm is None:
        raise UserError(f"calibrator {kind!r}: choose one of {', '.join(CACHE_ALGORITHMS)}")
    result = CalibrationInput()
    if cache and Path(cache).is_file():
        table = read_trt_cache(cache)
        want = trt_version_code(trt_version(trt))
        if table.algorithm == algorithm:
            if table.version_code != want:
                result.notes.append(f"--calib-cache {cache}: header {table.header} rewritten as TRT-{want}-{algorithm} "
                                    f"for {trt_label(trt)} (scales unchanged)")
            result.cache_bytes = table.text(want).encode("utf-8")
            return result
        if data is None:
            raise UserError(f"--calib-cache {cache}: written by the {table.algorithm} calibrator, this build uses "
                            f"{kind} ({algorithm}) and TensorRT would ignore it; add --calib-data to recalibrate, or "
                            f"pass a cache made for {kind}")
        result.warnings.append(f"--calib-cache {cache}: made by {table.algorithm}, not {algorithm}; recalibrating "
                               f"from --calib-data {data} and replacing it")
    elif data is None:
        raise UserError(f"--calib-cache {cache}: file not found; make it with edgeresnet calibrate or add --calib-data")
    shape = list(args.get("shape") or [])
    result.batches = calibration_batches(str(data), shape, int(args.get("batch_size", 1)),
                                         int(args.get("max_images", 512)))
    if backend is None:
        from edgeresnet.trt.cuda_mem import require_backend

        backend = require_backend()
    result.backend = backend
    return result


def make_calibrator(trt: Any, kind: str = "entropy2", *, cache: str | None = None,
                    batches: Iterable[Any] | None = None, batch_size: int = 1, input_name: str = "input",
                    backend: Any = None, cache_bytes: bytes | None = None, use_cache_file: bool = True) -> Any:
    """An ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) subclass instance made from ``trt``.

    It serves ``cache_bytes`` (or the cache file when ``use_cache_file`` and it exists; then TensorRT skips
    calibration), otherwise copies ``batches`` to the device one by one, and writes the cache TensorRT
    produces. TensorRT's trampoline catches and prints whatever a callback raises (pyInt8.cpp), so every
    callback keeps its exception instead: ``raise_failure()`` raises it after the build, and a failed cache
    write is ``write_failure`` (a warning: the engine itself is fine)."""
    base = {"entropy2": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}.get(kind)
    if base is None:
        raise UserError(f"calibrator {kind!r}: choose entropy2 or minmax")

    class Calibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # required: without it pybind11 calibrators crash ("Will mysteriously segfault without
            # this", TRT@HEAD:tools/Polygraphy/polygraphy/backend/trt/calibrator.py)
            self.cache_path = Path(cache) if cache else None
            self.batches = iter(batches) if batches is not None else iter(())
            self.backend = backend
            self.device_ptr: int | None = None
            self.stream: int | None = None
            self.served = 0
            self.failure: BaseException | None = None
            self.write_failure: str | None = None

        def get_batch_size(self) -> int:
            return int(batch_size)

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.failure is not None:
                return None
            try:
                return self._next_batch(names)
            except BaseException as exc:  # noqa: BLE001 - TensorRT would swallow it; raise_failure() re-raises
                self.failure = exc
                return None

        def _next_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            if self.backend is None:
                from edgeresnet.trt.cuda_mem import require_backend

                self.backend = require_backend()
            if self.device_ptr is None:
                self.device_ptr = self.backend.alloc(batch.nbytes)
                self.stream = self.backend.stream_create()
            self.backend.h2d_async(self.device_ptr, batch, self.stream)
            self.backend.stream_sync(self.stream)
            self.served += 1
            return [int(self.device_ptr) for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            try:
                if cache_bytes is not None:
                    return cache_bytes
                if use_cache_file and self.cache_path is not None and self.cache_path.is_file():
                    return self.cache_path.read_bytes()
            except BaseException as exc:  # noqa: BLE001
                self.failure = exc
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if self.cache_path is None:
                return
            try:
                from edgeresnet.artifacts import atomic_output

                with atomic_output(self.cache_path, "--calib-cache") as tmp:
                    tmp.write_bytes(bytes(memoryview(data)))
            except Exception as exc:  # noqa: BLE001 - the engine is fine; the caller warns
                self.write_failure = (f"--calib-cache {self.cache_path}: not written "
                                      f"({' '.join(str(exc).split())[:160] or exc.__class__.__name__})")

        def raise_failure(self) -> None:
            exc = self.failure
            if exc is None:
                return
            if isinstance(exc, (UserError, KeyboardInterrupt, SystemExit)):
                raise exc
            detail = " ".join(str(exc).split())[:200] or exc.__class__.__name__
            raise UserError(f"calibration failed at batch {self.served + 1} ({exc.__class__.__name__}: {detail}); "
                            "check --calib-data and the CUDA setup") from exc

        def release(self) -> None:
            if self.backend is not None and self.device_ptr is not None:
                self.backend.free(self.device_ptr)
                self.device_ptr = None
            if self.backend is not None and self.stream is not None:
                self.backend.stream_destroy(self.stream)
                self.stream = None

    calibrator = Calibrator()
    calibrator.input_name = input_name
    return calibrator


# -- inspection (needs a GPU: the engine must be deserialized) ------------------------------------


def deserialize_engine(trt: Any, data: bytes, logger: Any = None, *, dla_core: int | None = None,
                       host_code_allowed: bool = False, source: str = "engine", rebuild: str | None = None) -> Any:
    """``Runtime.deserialize_cuda_engine`` with a None or a CUDA start failure turned into trt-core's
    classified one-line error (version tag, compute capability, not a plan, no driver)."""
    logger = logger if logger is not None else make_logger(trt)
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:  # factory returned nullptr: CUDA could not be initialised
        # (github.com/NVIDIA/TensorRT/issues/2913)
        raise classify_failure(logger, source, rebuild) from exc
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    if host_code_allowed and hasattr(runtime, "engine_host_code_allowed"):
        # a version-compatible plan embeds a lean runtime; NvInferRuntime.h setEngineHostCodeAllowed: "Set whether
        # the runtime is allowed to deserialize engines with host executable code" (default false, TensorRT >= 8.6)
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise classify_failure(logger, source, rebuild)
    return engine


def inspect_engine(trt: Any, engine: Any) -> dict[str, Any]:
    """The engine inspector's JSON (per-layer precision, tactic, DLA placement; DETAILED verbosity)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(text)
    except (TypeError, ValueError):
        return {"raw": str(text)}
    return info if isinstance(info, dict) else {"Layers": info}
