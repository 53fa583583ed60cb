"""Applying a ``BuildPlan`` to the TensorRT module: one handler per plan step, in plan order.

Nothing is decided here: ``plan_build`` chose every step; each handler maps its step to TensorRT calls, enum
members by *name* (``getattr(trt.BuilderFlag, name)``), so one code path serves TensorRT 8.6 to 11.x and
TensorRT-RTX (its differences live in ``rtx.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt import rtx
from edgeresnet.trt.adapter.calibrator import CalibrationInput, make_calibrator, prepare_calibration
from edgeresnet.trt.adapter.loader import trt_flavor, trt_label, trt_version
from edgeresnet.trt.adapter.logs import classify_failure, error_lines, logged_messages, make_logger
from edgeresnet.trt.adapter.parser_errors import parser_failure


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


class NetworkBuild:
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
        lines = [line for m in errors for line in error_lines(m)]
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
            raise parser_failure(trt, parser, onnx_path)
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


def run_build(trt: Any, plan: Any, logger: Any = None, *, backend: Any = None) -> NetworkBuild:
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
    state = NetworkBuild(trt, plan, logger)
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
