"""A Keras backbone network run by ONNX Runtime: the same features without TensorFlow.

TensorFlow takes seconds to import and a Keras network most of a second to build, which a
one-video ``fakeprobe predict`` pays in full. ONNX Runtime imports in a fraction of a second and
runs a converted copy of the network on the CPU at least as fast. This module has two halves:

* :func:`convert` (export time only: TensorFlow, ``tf2onnx`` and ``onnx``, the ``export`` extra)
  traces a Keras feature network with a ``uint8`` crop input, freezes it and writes it as an ONNX
  graph; every float32 weight whose values are float16 numbers (all of a network rebuilt from
  float16 weights) is stored as float16 with a ``Cast`` back to float32, which loses nothing
  and halves the file. The caller's description (what the graph was converted from, how well
  it agreed) is stored in the graph's metadata under :data:`METADATA_KEY`.
* :class:`OnnxNetwork` (run time: only ``onnxruntime``) loads such a graph from bytes whose
  SHA-256 the caller has checked, and embeds crops in batches.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import numpy as np

from fakeprobe.errors import WeightsError

ORT_HINT = 'pip install "onnxruntime>=1.17"'
EXPORT_HINT = 'pip install "fakeprobe[export]" (tf2onnx and onnx)'
#: The key of fakeprobe's JSON description in a converted graph's metadata.
METADATA_KEY = "fakeprobe"
#: The graph's input (``(n, S, S, 3)`` uint8 RGB crops) and output (``(n, dim)`` float32).
INPUT_NAME = "crops"
OUTPUT_NAME = "features"
#: The ONNX operator set written; ONNX Runtime 1.17 and later run it.
OPSET = 17
#: Initializers smaller than this stay float32 (scalars and shapes: nothing to gain).
MIN_FLOAT16_SIZE = 16


def available() -> bool:
    """Whether ONNX Runtime is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


# --------------------------------------------------------------------------------------------
# Export: Keras -> ONNX (needs TensorFlow, tf2onnx, onnx)


def convert(model: Any, size: int) -> Any:
    """The Keras ``model`` (float RGB ``0..255`` in, features out) as an ONNX graph (a
    ``ModelProto``) taking ``(n, size, size, 3)`` uint8 crops; see :func:`serialize`."""
    try:
        import onnx  # noqa: F401  (checked here: serialize needs it)
        import tf2onnx
    except ImportError as exc:
        raise WeightsError(f"converting a network to ONNX needs tf2onnx and onnx ({exc}); "
                           f"{EXPORT_HINT}") from None
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from fakeprobe.core.tf import import_tensorflow

    tf = import_tensorflow()
    spec = tf.TensorSpec([None, size, size, 3], tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def forward(crops):
        return model(tf.cast(crops, tf.float32), training=False)

    # Constants, not variables: tf2onnx would turn tensors captured by the trace (a
    # Normalization layer's mean and variance) into graph inputs.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise WeightsError(f"a feature network has one input and one output, this one "
                           f"{len(inputs)} and {len(outputs)}")
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs,
                                              output_names=outputs, opset=OPSET)
    graph = proto.graph
    _rename(graph, inputs[0], INPUT_NAME)
    _rename(graph, outputs[0], OUTPUT_NAME)
    _store_float16(graph)
    proto.producer_name = "fakeprobe"
    return proto


def serialize(proto: Any, metadata: dict) -> bytes:
    """The bytes of the graph ``proto`` with ``metadata`` stored under :data:`METADATA_KEY`
    (metadata changes no output), after ONNX's own check of the graph."""
    import onnx

    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename the tensor ``old`` to ``new`` wherever the graph names it."""
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _store_float16(graph: Any) -> int:
    """Store each float32 initializer whose every value is a float16 number as float16, cast
    back to float32 by a ``Cast`` node at the graph's start (exact); how many were stored so."""
    from onnx import TensorProto, helper, numpy_helper

    casts, stored = [], 0
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < MIN_FLOAT16_SIZE:
            continue
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue  # not float16 numbers (e.g. folded by the converter): kept exact
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(half, f"{init.name}__f16"))
        casts.append(helper.make_node("Cast", [f"{init.name}__f16"], [init.name],
                                      to=TensorProto.FLOAT, name=f"{init.name}__cast"))
        stored += 1
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return stored


# --------------------------------------------------------------------------------------------
# Run time: ONNX Runtime only


def providers_for(device: str) -> list[str] | None:
    """ONNX Runtime's execution providers for fakeprobe's ``device`` (``auto``: CUDA when this
    ONNX Runtime has it, else the CPU); ``None`` when it cannot honour the request (``gpu``
    without CUDA in ONNX Runtime)."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None if device == "gpu" else ["CPUExecutionProvider"]


class OnnxNetwork:
    """A converted feature network in an ONNX Runtime session.

    ``model`` is the graph's bytes (read and checked by the caller, so what runs is what was
    checked); ``threads`` caps ONNX Runtime's threads (0: its default, one per core). Its
    threads sleep between batches instead of spinning, leaving the cores to the decoding and
    detecting threads of an extraction.
    """

    def __init__(self, model: bytes, source: str, *, providers: list[str], batch_size: int,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise WeightsError(f"ONNX Runtime cannot load {source}: {exc}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise WeightsError(f"{source} is not a fakeprobe feature network (inputs "
                               f"{[i.name for i in inputs]}, outputs {[o.name for o in outputs]})")
        shape = inputs[0].shape
        self.size = shape[1] if len(shape) == 4 and shape[1] == shape[2] else None
        self.dim = outputs[0].shape[-1] if len(outputs[0].shape) == 2 else None
        if inputs[0].type != "tensor(uint8)" or not isinstance(self.size, int) \
                or not isinstance(self.dim, int):
            raise WeightsError(f"{source}: input {inputs[0].type} {shape}, output "
                               f"{outputs[0].shape}; expected uint8 (n, S, S, 3) -> (n, d)")
        meta = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        try:
            self.metadata = json.loads(meta) if meta else {}
        except ValueError:
            self.metadata = {}
        if not isinstance(self.metadata, dict):
            self.metadata = {}
        self.providers = self._session.get_providers()
        self.batch_size = int(batch_size)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 RGB -> ``(n, dim)`` float32, ``batch_size`` crops a run."""
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = np.ascontiguousarray(crops[start:start + self.batch_size])
            out[start:start + len(batch)] = self._session.run(
                [OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return out
