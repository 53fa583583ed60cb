"""Every TensorRT name the adapter uses, grouped by the releases whose code path uses it.

The contract test (tests/test_trt_api_contract.py) AST-scans the adapter, ``rtx.py``, ``runtime.py`` and the trt
runner, and checks that (a) each name found is declared here and (b) each declared name exists in the real bindings
of every release its group applies to (``edgeresnet/trt/api/trt-<ver>.json``). Objects returned by TensorRT are held
in variables named after their class (``VARIABLE_CLASSES``), so the scan can tell which class a method belongs to.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeresnet.trt import rtx

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
