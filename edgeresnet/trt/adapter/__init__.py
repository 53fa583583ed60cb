"""The only code that calls ``tensorrt`` (with ``rtx.py`` for TensorRT-RTX's differences): this package.

It applies a ``BuildPlan`` to the module it is given and loads built engines back; nothing is decided here
(``plan_build`` chose every step). The module is injected (``load_trt`` imports it lazily), which is how tests
drive the adapter with a recording fake built from the real bindings' name lists
(``edgeresnet/trt/api/trt-<ver>.json``). Every TensorRT name on a release's code path is declared in
``names.NAMES_USED``, which the contract test checks against those lists.

=================== ====================================================================================
module              concern
=================== ====================================================================================
``loader``          which module (TensorRT or TensorRT-RTX), its version, label and feature table
``names``           the TensorRT names used, by the releases whose code path uses them
``logs``            the recording logger and the one-line errors made from its messages
``parser_errors``   a failed ONNX parse, naming the file and the failing node
``network_build``   one handler per plan step, ``run_build`` / ``build_engine``
``calibrator``      INT8 calibration data checked up front, and the calibrator (TensorRT < 11)
``engine``          deserializing an engine, and its layer report
=================== ====================================================================================
"""

from edgeresnet.trt import rtx
from edgeresnet.trt.adapter.calibrator import calibration_batches, make_calibrator, prepare_calibration
from edgeresnet.trt.adapter.engine import deserialize_engine, inspect_engine
from edgeresnet.trt.adapter.loader import features_for, load_trt, trt_flavor, trt_label, trt_version
from edgeresnet.trt.adapter.logs import classify_failure, logged_messages, make_logger
from edgeresnet.trt.adapter.names import GROUP_APPLIES, NAMES_USED, PLAN_ENUMS, VARIABLE_CLASSES
from edgeresnet.trt.adapter.network_build import NetworkBuild, build_engine, check_plan_matches, run_build

__all__ = [
    "GROUP_APPLIES", "NAMES_USED", "PLAN_ENUMS", "VARIABLE_CLASSES", "NetworkBuild", "build_engine",
    "calibration_batches", "check_plan_matches", "classify_failure", "deserialize_engine", "features_for",
    "inspect_engine", "load_trt", "logged_messages", "make_calibrator", "make_logger", "prepare_calibration", "rtx",
    "run_build", "trt_flavor", "trt_label", "trt_version",
]
