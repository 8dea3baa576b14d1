"""Write and read .ttfs model files (docs/FORMAT.md), with numpy and the standard library only.

Every magic number, size, offset and enum value comes from cuda/ttfs_format.h, parsed at import
into CONST, so this writer and the C reader cannot drift apart.

Typical use:

    layers = [input_layer((28, 28, 1)),
              conv2d("conv1", w1, b1), maxpool("pool1"),
              flatten(), dense("fc1", w2, b2)]
    spec = build_model(layers, time_steps=400, metadata={"source": "mnist"})
    write_model(spec, "mnist.ttfs")

to_bytes(spec) validates what the C reader validates and raises ValueError naming the layer and
the field; to_bytes(spec, check=False) writes whatever it is given (for corrupt-file tests).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = [
    "CONST", "NeuronParams", "Layer", "ModelSpec",
    "input_layer", "conv2d", "maxpool", "flatten", "dense",
    "build_model", "to_bytes", "write_model", "from_bytes", "read_model", "with_crc",
    "output_extent",
]

# ---- Constants, parsed from the C header ------------------------------------------------------

_FORMAT_HEADER = Path(__file__).resolve().parent.parent / "cuda" / "ttfs_format.h"
_DEFINE = re.compile(r'^\s*#\s*define\s+(TTFS_FMT_\w+)\s+(-?(?:0[xX][0-9a-fA-F]+|\d+)|"(?:[^"\\]|\\.)*")')


class _Constants(dict):
    """CONST["TTFS_FMT_VERSION"]; the short form CONST["VERSION"] works too."""

    def __missing__(self, key):
        if isinstance(key, str) and not key.startswith("TTFS_FMT_") and "TTFS_FMT_" + key in self:
            return self["TTFS_FMT_" + key]
        raise KeyError(f"{key!r} is not a TTFS_FMT_* constant of {_FORMAT_HEADER}")


def _parse_constants(path: Path) -> _Constants:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportError(f"export.ttfs_format needs the format constants in {path}: {exc}") from exc
    constants = _Constants()
    for line in text.splitlines():
        match = _DEFINE.match(line)
        if not match:
            continue
        name, value = match.group(1), match.group(2)
        if value.startswith('"'):
            # C string literal: decode its escapes ("\0" -> NUL) into bytes.
            constants[name] = value[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1")
        else:
            constants[name] = int(value, 0)
    required = ("TTFS_FMT_MAGIC", "TTFS_FMT_VERSION", "TTFS_FMT_HEADER_SIZE", "TTFS_FMT_L_RESERVED",
                "TTFS_FMT_T_RESERVED", "TTFS_FMT_MAX_METADATA_SIZE")
    missing = [name for name in required if name not in constants]
    if missing:
        raise ImportError(f"{path} lacks the #define lines for {', '.join(missing)}")
    return constants


CONST = _parse_constants(_FORMAT_HEADER)
_C = CONST

_KINDS = {"input": _C["TTFS_FMT_LAYER_INPUT"], "conv2d": _C["TTFS_FMT_LAYER_CONV2D"],
          "maxpool": _C["TTFS_FMT_LAYER_MAXPOOL"], "flatten": _C["TTFS_FMT_LAYER_FLATTEN"],
          "dense": _C["TTFS_FMT_LAYER_DENSE"]}
_PADDINGS = {"valid": _C["TTFS_FMT_PADDING_VALID"], "same": _C["TTFS_FMT_PADDING_SAME"]}
_POOL_MODES = {"or": _C["TTFS_FMT_POOL_OR"], "earliest": _C["TTFS_FMT_POOL_EARLIEST"],
               "gated": _C["TTFS_FMT_POOL_GATED"]}
# The pool modes a model file can hold, by name (the export CLI offers these).
POOL_MODE_NAMES = tuple(_POOL_MODES)
_READOUTS = {"vmem": _C["TTFS_FMT_READOUT_VMEM"], "first_spike": _C["TTFS_FMT_READOUT_FIRST_SPIKE"]}
_NEURON_KINDS = ("input", "conv2d", "dense")
_NO_TENSOR = _C["TTFS_FMT_NO_TENSOR"]


def _code(table: Dict[str, int], value, what: str) -> int:
    """Enum code for a name; an int is passed through (so check=False can write unknown codes)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if value in table:
        return table[value]
    raise ValueError(f"{what} {value!r} is not one of {sorted(table)}")


def _name_of(table: Dict[str, int], code: int):
    for name, value in table.items():
        if value == code:
            return name
    return code


# ---- The spec -----------------------------------------------------------------------------------


@dataclass
class NeuronParams:
    """Per-layer neuron constants (docs/ALGORITHM.md section 4). None = filled by build_model."""

    tau_fire: float = 20.0
    td_fire: float = 0.0
    tau_integ: Optional[float] = None
    td_integ: Optional[float] = None
    vth0: float = 1.0
    integ_window: Optional[Tuple[int, int]] = None  # [start, end) in global time steps
    fire_window: Optional[Tuple[int, int]] = None


@dataclass
class Layer:
    """One layer record plus its tensors. Fields a kind does not use keep their defaults."""

    kind: str  # "input" | "conv2d" | "maxpool" | "flatten" | "dense"
    name: str
    out_shape: Optional[Tuple[int, int, int]] = None  # (h, w, c); filled by build_model
    depth: int = -1  # neuron layers 0, 1, 2, ...; filled by build_model
    kernel: Tuple[int, int] = (0, 0)  # conv2d kernel, maxpool pool size
    stride: Tuple[int, int] = (0, 0)
    padding: str = "valid"
    pool_mode: str = "or"  # maxpool: "or" | "earliest" | "gated" (docs/FORMAT.md)
    weights: Optional[np.ndarray] = None  # conv2d HWIO [kh, kw, cin, cout]; dense [in, out]
    bias: Optional[np.ndarray] = None  # [out_c]
    neuron: Optional[NeuronParams] = None
    input_divisor: float = 0.0  # input layer: x = float32(byte) / input_divisor


@dataclass
class ModelSpec:
    layers: List[Layer]
    time_steps: int
    readout: str = "vmem"  # "vmem" | "first_spike"
    metadata: Any = field(default_factory=dict)  # dict -> JSON; str/bytes written verbatim


def _f32(array, what: str) -> np.ndarray:
    result = np.array(array, dtype=np.float32)  # a copy: the spec owns its tensors
    if result.ndim == 0:
        raise ValueError(f"{what} must be an array, got a scalar")
    return result


def input_layer(shape=(28, 28, 1), name: str = "input", divisor: float = 255.0,
                neuron: Optional[NeuronParams] = None) -> Layer:
    return Layer(kind="input", name=name, out_shape=tuple(int(v) for v in shape),
                 neuron=neuron, input_divisor=float(divisor))


def conv2d(name: str, weights_hwio, bias=None, stride=(1, 1), padding: str = "valid",
           neuron: Optional[NeuronParams] = None) -> Layer:
    weights = _f32(weights_hwio, f"conv2d '{name}' weights")
    if weights.ndim != 4:
        raise ValueError(f"conv2d '{name}': weights must be HWIO [kh, kw, cin, cout], got shape "
                         f"{weights.shape}")
    return Layer(kind="conv2d", name=name, kernel=(weights.shape[0], weights.shape[1]),
                 stride=tuple(int(v) for v in stride), padding=padding, weights=weights,
                 bias=None if bias is None else _f32(bias, f"conv2d '{name}' bias"), neuron=neuron)


def maxpool(name: str, size=(2, 2), stride=None, padding: str = "valid", mode: str = "or") -> Layer:
    size = tuple(int(v) for v in size)
    stride = size if stride is None else tuple(int(v) for v in stride)
    return Layer(kind="maxpool", name=name, kernel=size, stride=stride, padding=padding,
                 pool_mode=mode)


def flatten(name: str = "flatten") -> Layer:
    return Layer(kind="flatten", name=name)


def dense(name: str, weights_in_out, bias=None, neuron: Optional[NeuronParams] = None) -> Layer:
    weights = _f32(weights_in_out, f"dense '{name}' weights")
    if weights.ndim != 2:
        raise ValueError(f"dense '{name}': weights must be [in, out], got shape {weights.shape}")
    return Layer(kind="dense", name=name, weights=weights,
                 bias=None if bias is None else _f32(bias, f"dense '{name}' bias"), neuron=neuron)


def output_extent(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output size along one axis of conv2d/maxpool: VALID floor((in-k)/s)+1, SAME ceil(in/s)."""
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _where(index: int, layer: Layer) -> str:
    return f"layer {index} '{layer.name}'"


def _chain_shape(index: int, layer: Layer, shape_in) -> Tuple[int, int, int]:
    """The output shape a layer must have given its input shape; ValueError if it cannot chain."""
    where = _where(index, layer)
    h, w, c = shape_in
    if layer.kind in ("conv2d", "maxpool"):
        if layer.padding not in _PADDINGS:
            raise ValueError(f"{where}: padding {layer.padding!r}, expected 'valid' or 'same'")
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        if min(kh, kw, sh, sw) < 1:
            raise ValueError(f"{where}: kernel {layer.kernel} and stride {layer.stride} must be >= 1")
        if layer.padding == "valid" and (h < kh or w < kw):
            raise ValueError(f"{where}: input {h}x{w} is smaller than the kernel {kh}x{kw} "
                             f"under VALID padding")
        out_h = output_extent(h, kh, sh, layer.padding)
        out_w = output_extent(w, kw, sw, layer.padding)
        if layer.kind == "maxpool":
            return (out_h, out_w, c)
        weights = layer.weights
        if weights is None or weights.ndim != 4 or tuple(weights.shape[:3]) != (kh, kw, c):
            got = None if weights is None else tuple(weights.shape)
            raise ValueError(f"{where}: weights shape {got}, expected [{kh}, {kw}, {c}, out_c] "
                             f"(HWIO, in_c from the previous layer)")
        return (out_h, out_w, int(weights.shape[3]))
    if layer.kind == "flatten":
        return (1, 1, h * w * c)
    if layer.kind == "dense":
        if (h, w) != (1, 1):
            raise ValueError(f"{where}: dense needs a (1, 1, n) input, got {shape_in}; "
                             f"put a flatten layer before it")
        weights = layer.weights
        if weights is None or weights.ndim != 2 or weights.shape[0] != c:
            got = None if weights is None else tuple(weights.shape)
            raise ValueError(f"{where}: weights shape {got}, expected [{c}, units]")
        return (1, 1, int(weights.shape[1]))
    raise ValueError(f"{where}: kind {layer.kind!r} cannot follow another layer; expected one of "
                     f"conv2d, maxpool, flatten, dense")


def build_model(layers, time_steps: int, readout: str = "vmem", metadata=None, *,
                time_fire_start: int = 80, time_fire_duration: int = 80) -> ModelSpec:
    """Complete a list of layers into a ModelSpec (the given layers are not modified).

    Fills output shapes, depths (neuron layers 0, 1, 2, ...), default neuron parameters, and
    the reference windows where a window is None (docs/ALGORITHM.md section 3, T_s = time_fire_start,
    T_d = time_fire_duration): the input fires [0, T_d); depth d integrates
    [(d-1) T_s, (d-1) T_s + T_d) and fires [d T_s, d T_s + T_d). Windows are clipped to
    [0, time_steps], which changes nothing a simulation of time_steps steps could observe.
    tau_integ/td_integ chain from the previous neuron layer's tau_fire/td_fire where None.
    """
    layers = [copy.deepcopy(layer) for layer in layers]
    if len(layers) < 2:
        raise ValueError(f"a model needs an input layer and at least one more, got {len(layers)}")
    if readout not in _READOUTS:
        raise ValueError(f"readout {readout!r} is not one of {sorted(_READOUTS)}")
    if time_steps < 1:
        raise ValueError(f"time_steps {time_steps} must be >= 1")

    def clip(start: int, end: int) -> Tuple[int, int]:
        start = min(max(int(start), 0), time_steps)
        return start, min(max(int(end), start), time_steps)

    shape = None
    depth = 0
    previous_neuron: Optional[NeuronParams] = None
    for index, layer in enumerate(layers):
        if index == 0:
            if layer.kind != "input":
                raise ValueError(f"{_where(index, layer)}: the first layer must be the input "
                                 f"layer, got kind {layer.kind!r}")
            if layer.out_shape is None or len(layer.out_shape) != 3:
                raise ValueError(f"{_where(index, layer)}: out_shape {layer.out_shape} must be (h, w, c)")
            layer.out_shape = tuple(int(v) for v in layer.out_shape)
        else:
            layer.out_shape = _chain_shape(index, layer, shape)
        shape = layer.out_shape
        if layer.kind not in _NEURON_KINDS:
            layer.depth = -1
            continue
        layer.depth = depth
        neuron = layer.neuron if layer.neuron is not None else NeuronParams()
        if layer.kind == "input":
            if neuron.tau_integ is None:
                neuron.tau_integ = 0.0
            if neuron.td_integ is None:
                neuron.td_integ = 0.0
            if neuron.integ_window is None:
                neuron.integ_window = (0, 0)
            if neuron.fire_window is None:
                neuron.fire_window = clip(0, time_fire_duration)
        else:
            if neuron.tau_integ is None:
                neuron.tau_integ = previous_neuron.tau_fire
            if neuron.td_integ is None:
                neuron.td_integ = previous_neuron.td_fire
            if neuron.integ_window is None:
                start = (depth - 1) * time_fire_start
                neuron.integ_window = clip(start, start + time_fire_duration)
            if neuron.fire_window is None:
                start = depth * time_fire_start
                neuron.fire_window = clip(start, start + time_fire_duration)
        neuron.integ_window = tuple(int(v) for v in neuron.integ_window)
        neuron.fire_window = tuple(int(v) for v in neuron.fire_window)
        layer.neuron = neuron
        previous_neuron = neuron
        depth += 1
    if layers[-1].kind not in ("conv2d", "dense"):
        raise ValueError(f"{_where(len(layers) - 1, layers[-1])}: the last layer is the output "
                         f"layer and must be conv2d or dense, got {layers[-1].kind!r}")
    return ModelSpec(layers=layers, time_steps=int(time_steps), readout=readout,
                     metadata={} if metadata is None else metadata)


# ---- Validation (what the C reader checks) -----------------------------------------------------


def _metadata_bytes(metadata) -> bytes:
    if metadata is None:
        return b""
    if isinstance(metadata, (bytes, bytearray)):
        return bytes(metadata)
    if isinstance(metadata, str):
        return metadata.encode("utf-8")
    if isinstance(metadata, dict) and not metadata:
        return b""
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _finite_positive(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0 and np.float32(value) > 0


def _finite(value) -> bool:
    return value is not None and math.isfinite(value) and math.isfinite(np.float32(value))


def _validate(spec: ModelSpec) -> None:
    """Raise ValueError (naming the layer and field) for anything the C reader would reject."""
    limits = CONST
    layers = spec.layers
    steps = spec.time_steps
    if not (2 <= len(layers) <= limits["TTFS_FMT_MAX_LAYERS"]):
        raise ValueError(f"layer_count {len(layers)}, expected 2 .. {limits['TTFS_FMT_MAX_LAYERS']}")
    if not (isinstance(steps, (int, np.integer)) and 1 <= steps <= limits["TTFS_FMT_MAX_TIME_STEPS"]):
        raise ValueError(f"time_steps {steps!r}, expected 1 .. {limits['TTFS_FMT_MAX_TIME_STEPS']}")
    if spec.readout not in _READOUTS:
        raise ValueError(f"readout {spec.readout!r}, expected one of {sorted(_READOUTS)}")
    metadata = _metadata_bytes(spec.metadata)
    if len(metadata) > limits["TTFS_FMT_MAX_METADATA_SIZE"]:
        raise ValueError(f"metadata_size {len(metadata)}, expected at most "
                         f"{limits['TTFS_FMT_MAX_METADATA_SIZE']} bytes")
    if b"\0" in metadata:
        raise ValueError("metadata contains a NUL byte; expected JSON text without NUL")
    try:
        metadata.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"metadata is not valid UTF-8: {exc}") from None

    tensors = 0
    depth = 0
    shape = None
    max_extent = limits["TTFS_FMT_MAX_EXTENT"]
    for index, layer in enumerate(layers):
        where = _where(index, layer)
        if layer.kind not in _KINDS:
            raise ValueError(f"{where}: kind {layer.kind!r}, expected one of {sorted(_KINDS)}")
        encoded = layer.name.encode("utf-8") if isinstance(layer.name, str) else b""
        if not encoded or len(encoded) >= limits["TTFS_FMT_NAME_SIZE"] or b"\0" in encoded:
            raise ValueError(f"{where}: name {layer.name!r} must be 1 .. "
                             f"{limits['TTFS_FMT_NAME_SIZE'] - 1} bytes of UTF-8 without NUL")
        if (index == 0) != (layer.kind == "input"):
            raise ValueError(f"{where}: kind {layer.kind!r}; layer 0 and only layer 0 is the input layer")
        if layer.out_shape is None or len(layer.out_shape) != 3:
            raise ValueError(f"{where}: out_shape {layer.out_shape}, expected (h, w, c); use build_model")
        out = tuple(int(v) for v in layer.out_shape)
        if min(out) < 1 or max(out) > max_extent or out[0] * out[1] * out[2] > limits["TTFS_FMT_MAX_LAYER_SIZE"]:
            raise ValueError(f"{where}: out_shape {out}, expected each extent 1 .. {max_extent} "
                             f"and h*w*c <= {limits['TTFS_FMT_MAX_LAYER_SIZE']}")
        if index > 0 and _chain_shape(index, layer, shape) != out:
            raise ValueError(f"{where}: out_shape {out} does not follow from the input shape "
                             f"{shape}; expected {_chain_shape(index, layer, shape)}")
        shape = out

        pooled = layer.kind in ("conv2d", "maxpool")
        if pooled:
            if layer.padding not in _PADDINGS:
                raise ValueError(f"{where}: padding {layer.padding!r}, expected 'valid' or 'same'")
            if max(*layer.kernel, *layer.stride) > max_extent:
                raise ValueError(f"{where}: kernel {layer.kernel} / stride {layer.stride} over {max_extent}")
        elif tuple(layer.kernel) != (0, 0) or tuple(layer.stride) != (0, 0) or layer.padding != "valid":
            raise ValueError(f"{where}: kernel/stride/padding are unused by {layer.kind} and must "
                             f"stay (0, 0)/(0, 0)/'valid'")
        if layer.kind == "maxpool":
            if layer.pool_mode not in _POOL_MODES:
                raise ValueError(f"{where}: pool_mode {layer.pool_mode!r}, expected 'or', 'earliest' "
                                 f"or 'gated'")
            below = layers[index - 1]
            if layer.pool_mode == "gated" and below.kind not in _NEURON_KINDS:
                raise ValueError(f"{where}: pool_mode 'gated' reads the spike counters of the layer "
                                 f"directly below it, which must be input, conv2d or dense; layer "
                                 f"{index - 1} '{below.name}' is a {below.kind}")
        elif layer.pool_mode != "or":
            raise ValueError(f"{where}: pool_mode is unused by {layer.kind} and must stay 'or'")

        weighted = layer.kind in ("conv2d", "dense")
        if not weighted and (layer.weights is not None or layer.bias is not None):
            raise ValueError(f"{where}: {layer.kind} has no weights or bias")
        if weighted:
            for what, tensor in (("weights", layer.weights), ("bias", layer.bias)):
                if tensor is None:
                    continue
                tensors += 1
                array = np.asarray(tensor)
                if array.size > limits["TTFS_FMT_MAX_TENSOR_ELEMENTS"]:
                    raise ValueError(f"{where}: {what} has {array.size} elements, expected at most "
                                     f"{limits['TTFS_FMT_MAX_TENSOR_ELEMENTS']}")
                if not np.all(np.isfinite(array.astype(np.float32))):
                    raise ValueError(f"{where}: {what} hold NaN or Inf (as float32); expected finite values")
            if layer.bias is not None and tuple(np.shape(layer.bias)) != (out[2],):
                raise ValueError(f"{where}: bias shape {tuple(np.shape(layer.bias))}, expected ({out[2]},)")

        if layer.kind == "input":
            if not _finite_positive(layer.input_divisor):
                raise ValueError(f"{where}: input_divisor {layer.input_divisor}, expected finite > 0")
        elif layer.input_divisor != 0:
            raise ValueError(f"{where}: input_divisor is used by the input layer only and must be 0")

        if layer.kind not in _NEURON_KINDS:
            if layer.neuron is not None:
                raise ValueError(f"{where}: {layer.kind} has no neurons; neuron must be None")
            if layer.depth != -1:
                raise ValueError(f"{where}: depth {layer.depth}, expected -1 for {layer.kind}")
            continue
        if layer.depth != depth:
            raise ValueError(f"{where}: depth {layer.depth}, expected {depth} (neuron layers count 0, 1, 2, ...)")
        depth += 1
        neuron = layer.neuron
        if neuron is None:
            raise ValueError(f"{where}: neuron parameters missing; use build_model")
        for name in ("tau_fire", "vth0") + (("tau_integ",) if layer.kind != "input" else ()):
            if not _finite_positive(getattr(neuron, name)):
                raise ValueError(f"{where}: {name} {getattr(neuron, name)}, expected finite > 0")
        for name in ("td_fire",) + (("td_integ",) if layer.kind != "input" else ()):
            if not _finite(getattr(neuron, name)):
                raise ValueError(f"{where}: {name} {getattr(neuron, name)}, expected a finite number")
        for name in ("integ_window", "fire_window"):
            window = getattr(neuron, name)
            if window is None or len(window) != 2 or not (0 <= window[0] <= window[1] <= steps):
                raise ValueError(f"{where}: {name} {window}, expected [start, end) with "
                                 f"0 <= start <= end <= time_steps ({steps})")
        if layer.kind == "input" and (neuron.tau_integ != 0 or neuron.td_integ != 0
                                      or tuple(neuron.integ_window) != (0, 0)):
            raise ValueError(f"{where}: the input layer does not integrate; tau_integ, td_integ "
                             f"and integ_window must be 0, 0 and (0, 0)")
    if layers[-1].kind not in ("conv2d", "dense"):
        raise ValueError(f"{_where(len(layers) - 1, layers[-1])}: the output layer must be conv2d "
                         f"or dense, got {layers[-1].kind!r}")
    window_steps = sum(window[1] - window[0] for layer in layers if layer.neuron is not None
                       for window in (layer.neuron.integ_window, layer.neuron.fire_window))
    if window_steps > limits["TTFS_FMT_MAX_WINDOW_STEPS"]:
        raise ValueError(f"the integration and fire windows of all layers add up to {window_steps} "
                         f"steps, more than the limit of {limits['TTFS_FMT_MAX_WINDOW_STEPS']}")
    if tensors > limits["TTFS_FMT_MAX_TENSORS"]:
        raise ValueError(f"tensor_count {tensors}, expected at most {limits['TTFS_FMT_MAX_TENSORS']}")
    _validate_derived(spec)


def _largest_decay(length: int, td, tau):
    """The largest entry of exp(-(float(j) - td) / tau) over j in [0, length), float32 op by op
    as cuda/model.cpp forms the table, the exp rounded once (in float64, then to float32);
    None for an empty table. With tau > 0 the exponent never grows with j, so it is entry 0."""
    if length <= 0:
        return None
    f32 = np.float32
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        elapsed = f32(0) - f32(td)
        return f32(np.exp(np.float64(-elapsed / f32(tau))))


def _spike_bounds(layers):
    """Per layer (window_start, window_len, most spikes per unit), as cuda/model.cpp's
    spike_bounds(): neurons and `earliest` pool units spike once, other pool units at most once
    per distinct step of their children, never more often than their window has steps."""
    bounds = []
    for index, layer in enumerate(layers):
        if layer.kind in _NEURON_KINDS:  # (the output layer's own spikes go nowhere)
            start, end = layer.neuron.fire_window
            if end > start:
                bounds.append((start, end - start, 1))
            else:
                bounds.append((0, 0, 0))
            continue
        start, length, per_unit = bounds[-1]
        if layer.kind == "maxpool":
            h, w = (layers[index - 1].out_shape[:2])
            children = min(layer.kernel[0], h) * min(layer.kernel[1], w)
            per_unit = min(per_unit, 1) if layer.pool_mode == "earliest" else min(children * per_unit, length)
        bounds.append((start, length, per_unit))
    return bounds


def _validate_derived(spec: ModelSpec) -> None:
    """What the reader checks after the fields (docs/FORMAT.md, "Derived values"): finite
    threshold and kernel tables, a finite scaled pixel 255 / input_divisor, and a bound on every
    membrane potential within float32's range."""
    f32 = np.float32
    layers = spec.layers
    for index, layer in enumerate(layers):
        if layer.kind not in _NEURON_KINDS:
            continue
        where, neuron = _where(index, layer), layer.neuron
        fire = _largest_decay(neuron.fire_window[1] - neuron.fire_window[0], neuron.td_fire, neuron.tau_fire)
        with np.errstate(over="ignore"):
            largest = None if fire is None else f32(neuron.vth0) * fire
        if largest is not None and not np.isfinite(largest):
            j = 0
            raise ValueError(f"{where}: the threshold at fire step {j} overflows float32 (vth0 "
                             f"{neuron.vth0}, td_fire {neuron.td_fire}, tau_fire {neuron.tau_fire}); "
                             f"expected finite thresholds")
        if layer.kind == "input":
            with np.errstate(over="ignore", divide="ignore"):
                brightest = f32(255) / f32(layer.input_divisor)
            if not np.isfinite(brightest):
                raise ValueError(f"{where}: input_divisor {layer.input_divisor} scales a pixel of "
                                 f"255 to {brightest}; expected a finite value")
            continue
        kernel = _largest_decay(neuron.integ_window[1] - neuron.integ_window[0], neuron.td_integ,
                                neuron.tau_integ)
        if kernel is not None and not np.isfinite(kernel):
            j = 0
            raise ValueError(f"{where}: the integration kernel at step {j} of the integration window "
                             f"overflows float32 (td_integ {neuron.td_integ}, tau_integ "
                             f"{neuron.tau_integ}); expected finite kernels")
    bounds = _spike_bounds(layers)
    most_float = float(np.finfo(f32).max)
    for index, layer in enumerate(layers):
        if layer.kind not in ("conv2d", "dense"):
            continue
        neuron = layer.neuron
        start, length, per_unit = bounds[index - 1]
        integ_start, integ_end = neuron.integ_window
        steps = max(0, min(start + length, integ_end) - max(start, integ_start))
        if length > 0 and start == 0 and not (integ_start == 0 and integ_end > 0):
            steps += 1
        per_unit = min(per_unit, steps)
        kernel = _largest_decay(integ_end - integ_start, neuron.td_integ, neuron.tau_integ)
        largest = 1.0 if kernel is None else max(1.0, float(kernel))
        weights = np.abs(np.asarray(layer.weights, dtype=f32).astype(np.float64))
        rows = weights.reshape(-1, weights.shape[-1])
        bias = (np.zeros(rows.shape[1]) if layer.bias is None
                else np.abs(np.asarray(layer.bias, dtype=f32).astype(np.float64)))
        reach = float(np.max(bias + rows.sum(axis=0) * largest * per_unit))
        reach *= math.exp((rows.shape[0] + steps + 3) * 2.0 ** -24 * 1.01)
        if not reach <= most_float:
            raise ValueError(f"{_where(index, layer)}: its membrane potentials could reach {reach:.6g}, "
                             f"beyond float32's range; expected weights, biases and kernels that "
                             f"keep every potential finite")


# ---- Writing ------------------------------------------------------------------------------------


def _align(offset: int) -> int:
    alignment = CONST["TTFS_FMT_ALIGNMENT"]
    return (offset + alignment - 1) // alignment * alignment


def _put(buffer: bytearray, fmt: str, offset: int, *values) -> None:
    struct.pack_into("<" + fmt, buffer, offset, *values)


def _f(value) -> float:
    return 0.0 if value is None else float(value)


def _i(value) -> int:
    return 0 if value is None else int(value)


def to_bytes(spec: ModelSpec, check: bool = True) -> bytes:
    """Serialise a spec (exactly docs/FORMAT.md). check=False skips validation (corrupt tests)."""
    if check:
        _validate(spec)
    C = CONST
    header_size, layer_size, tensor_size = (C["TTFS_FMT_HEADER_SIZE"], C["TTFS_FMT_LAYER_RECORD_SIZE"],
                                            C["TTFS_FMT_TENSOR_RECORD_SIZE"])

    # Tensors in layer order, weights before bias; each layer record refers to them by index.
    tensors: List[np.ndarray] = []
    references = []
    for layer in spec.layers:
        indices = []
        for tensor in (layer.weights, layer.bias):
            if tensor is None:
                indices.append(_NO_TENSOR)
            else:
                indices.append(len(tensors))
                tensors.append(np.ascontiguousarray(tensor, dtype="<f4"))
        references.append(indices)

    metadata = _metadata_bytes(spec.metadata)
    layer_table = header_size
    tensor_table = layer_table + layer_size * len(spec.layers)
    metadata_offset = tensor_table + tensor_size * len(tensors)
    position = metadata_offset + len(metadata)
    data_offsets = []
    for tensor in tensors:
        position = _align(position)
        data_offsets.append(position)
        position += tensor.nbytes
    file_size = position + C["TTFS_FMT_CRC_SIZE"]
    if check and file_size > C["TTFS_FMT_MAX_FILE_SIZE"]:
        raise ValueError(f"the model file would be {file_size} bytes, more than the format's limit "
                         f"of {C['TTFS_FMT_MAX_FILE_SIZE']} bytes")

    out = bytearray(position)
    out[C["TTFS_FMT_H_MAGIC"]:C["TTFS_FMT_H_MAGIC"] + C["TTFS_FMT_MAGIC_SIZE"]] = C["TTFS_FMT_MAGIC"]
    _put(out, "I", C["TTFS_FMT_H_VERSION"], C["TTFS_FMT_VERSION"])
    _put(out, "I", C["TTFS_FMT_H_HEADER_SIZE"], header_size)
    _put(out, "Q", C["TTFS_FMT_H_FILE_SIZE"], file_size)
    _put(out, "I", C["TTFS_FMT_H_LAYER_COUNT"], len(spec.layers))
    _put(out, "I", C["TTFS_FMT_H_LAYER_RECORD_SIZE"], layer_size)
    _put(out, "Q", C["TTFS_FMT_H_LAYER_TABLE_OFFSET"], layer_table)
    _put(out, "I", C["TTFS_FMT_H_TENSOR_COUNT"], len(tensors))
    _put(out, "I", C["TTFS_FMT_H_TENSOR_RECORD_SIZE"], tensor_size)
    _put(out, "Q", C["TTFS_FMT_H_TENSOR_TABLE_OFFSET"], tensor_table)
    _put(out, "Q", C["TTFS_FMT_H_METADATA_OFFSET"], metadata_offset)
    _put(out, "Q", C["TTFS_FMT_H_METADATA_SIZE"], len(metadata))
    _put(out, "I", C["TTFS_FMT_H_TIME_STEPS"], int(spec.time_steps))
    _put(out, "I", C["TTFS_FMT_H_READOUT"], _code(_READOUTS, spec.readout, "readout"))
    _put(out, "I", C["TTFS_FMT_H_FLAGS"], 0)

    for index, (layer, (weight_index, bias_index)) in enumerate(zip(spec.layers, references)):
        base = layer_table + index * layer_size
        name = layer.name.encode("utf-8")
        if len(name) > C["TTFS_FMT_NAME_SIZE"]:
            raise ValueError(f"{_where(index, layer)}: name is {len(name)} bytes, the field holds "
                             f"{C['TTFS_FMT_NAME_SIZE']}")
        out[base + C["TTFS_FMT_L_NAME"]:base + C["TTFS_FMT_L_NAME"] + len(name)] = name
        _put(out, "I", base + C["TTFS_FMT_L_KIND"], _code(_KINDS, layer.kind, f"{_where(index, layer)}: kind"))
        _put(out, "i", base + C["TTFS_FMT_L_DEPTH"], int(layer.depth))
        h, w, c = layer.out_shape if layer.out_shape is not None else (0, 0, 0)
        _put(out, "III", base + C["TTFS_FMT_L_OUT_H"], h, w, c)
        _put(out, "II", base + C["TTFS_FMT_L_KERNEL_H"], *layer.kernel)
        _put(out, "II", base + C["TTFS_FMT_L_STRIDE_H"], *layer.stride)
        _put(out, "I", base + C["TTFS_FMT_L_PADDING"], _code(_PADDINGS, layer.padding, "padding"))
        _put(out, "I", base + C["TTFS_FMT_L_POOL_MODE"], _code(_POOL_MODES, layer.pool_mode, "pool_mode"))
        _put(out, "i", base + C["TTFS_FMT_L_WEIGHT_TENSOR"], weight_index)
        _put(out, "i", base + C["TTFS_FMT_L_BIAS_TENSOR"], bias_index)
        neuron = layer.neuron
        if neuron is not None:
            integ = neuron.integ_window or (0, 0)
            fire = neuron.fire_window or (0, 0)
            _put(out, "fffff", base + C["TTFS_FMT_L_TAU_FIRE"], _f(neuron.tau_fire), _f(neuron.td_fire),
                 _f(neuron.tau_integ), _f(neuron.td_integ), _f(neuron.vth0))
            _put(out, "ii", base + C["TTFS_FMT_L_INTEG_START"], _i(integ[0]), _i(integ[1]))
            _put(out, "ii", base + C["TTFS_FMT_L_FIRE_START"], _i(fire[0]), _i(fire[1]))
        _put(out, "f", base + C["TTFS_FMT_L_INPUT_DIVISOR"], _f(layer.input_divisor))

    for index, (tensor, data_offset) in enumerate(zip(tensors, data_offsets)):
        base = tensor_table + index * tensor_size
        if not 1 <= tensor.ndim <= C["TTFS_FMT_MAX_DIMS"]:
            raise ValueError(f"tensor {index}: {tensor.ndim} dimensions, the record holds 1 .. "
                             f"{C['TTFS_FMT_MAX_DIMS']}")
        dims = list(tensor.shape) + [0] * (C["TTFS_FMT_MAX_DIMS"] - tensor.ndim)
        _put(out, "II", base + C["TTFS_FMT_T_DTYPE"], C["TTFS_FMT_DTYPE_FLOAT32"], tensor.ndim)
        _put(out, "4Q", base + C["TTFS_FMT_T_DIMS"], *dims)
        _put(out, "QQ", base + C["TTFS_FMT_T_DATA_OFFSET"], data_offset, tensor.nbytes)
        out[data_offset:data_offset + tensor.nbytes] = tensor.tobytes()

    out[metadata_offset:metadata_offset + len(metadata)] = metadata
    return with_crc(bytes(out) + b"\0" * C["TTFS_FMT_CRC_SIZE"])


def with_crc(data: bytes) -> bytes:
    """The same bytes with the trailing CRC-32 recomputed over everything before it."""
    crc_size = CONST["TTFS_FMT_CRC_SIZE"]
    if len(data) < crc_size:
        raise ValueError(f"{len(data)} bytes cannot hold a {crc_size}-byte CRC")
    body = bytes(data[:-crc_size])
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def write_model(spec: ModelSpec, path) -> None:
    data = to_bytes(spec)
    Path(path).write_bytes(data)


# ---- Reading back -------------------------------------------------------------------------------


def _get(data: bytes, fmt: str, offset: int, what: str):
    size = struct.calcsize("<" + fmt)
    if offset < 0 or offset + size > len(data):
        raise ValueError(f"{what} at offset {offset} lies outside the {len(data)}-byte file")
    values = struct.unpack_from("<" + fmt, data, offset)
    return values[0] if len(values) == 1 else values


def from_bytes(data: bytes) -> ModelSpec:
    """Parse a model file back into a ModelSpec, checking magic, version and CRC.

    Meant for round trips and inspection; the C reader is the full validator.
    """
    C = CONST
    data = bytes(data)
    crc_size = C["TTFS_FMT_CRC_SIZE"]
    if len(data) < C["TTFS_FMT_HEADER_SIZE"] + crc_size:
        raise ValueError(f"{len(data)} bytes is shorter than the {C['TTFS_FMT_HEADER_SIZE']}-byte header and CRC")
    magic = data[C["TTFS_FMT_H_MAGIC"]:C["TTFS_FMT_H_MAGIC"] + C["TTFS_FMT_MAGIC_SIZE"]]
    if magic != C["TTFS_FMT_MAGIC"]:
        raise ValueError(f"magic {magic!r}, expected {C['TTFS_FMT_MAGIC']!r}: not a ttfs model file")
    version = _get(data, "I", C["TTFS_FMT_H_VERSION"], "format_version")
    if version != C["TTFS_FMT_VERSION"]:
        raise ValueError(f"format_version {version}, expected {C['TTFS_FMT_VERSION']}")
    file_size = _get(data, "Q", C["TTFS_FMT_H_FILE_SIZE"], "file_size")
    if file_size != len(data):
        raise ValueError(f"file_size {file_size}, but the data is {len(data)} bytes")
    stored_crc = _get(data, "I", len(data) - crc_size, "crc32")
    actual_crc = zlib.crc32(data[:-crc_size]) & 0xFFFFFFFF
    if stored_crc != actual_crc:
        raise ValueError(f"crc32 0x{stored_crc:08x}, computed 0x{actual_crc:08x}: the file is damaged")

    layer_count = _get(data, "I", C["TTFS_FMT_H_LAYER_COUNT"], "layer_count")
    layer_table = _get(data, "Q", C["TTFS_FMT_H_LAYER_TABLE_OFFSET"], "layer_table_offset")
    tensor_count = _get(data, "I", C["TTFS_FMT_H_TENSOR_COUNT"], "tensor_count")
    tensor_table = _get(data, "Q", C["TTFS_FMT_H_TENSOR_TABLE_OFFSET"], "tensor_table_offset")
    metadata_offset = _get(data, "Q", C["TTFS_FMT_H_METADATA_OFFSET"], "metadata_offset")
    metadata_size = _get(data, "Q", C["TTFS_FMT_H_METADATA_SIZE"], "metadata_size")
    time_steps = _get(data, "I", C["TTFS_FMT_H_TIME_STEPS"], "time_steps")
    readout = _name_of(_READOUTS, _get(data, "I", C["TTFS_FMT_H_READOUT"], "readout"))

    tensors = []
    for index in range(tensor_count):
        base = tensor_table + index * C["TTFS_FMT_TENSOR_RECORD_SIZE"]
        ndim = _get(data, "I", base + C["TTFS_FMT_T_NDIM"], f"tensor {index} ndim")
        if not 1 <= ndim <= C["TTFS_FMT_MAX_DIMS"]:
            raise ValueError(f"tensor {index}: ndim {ndim}, expected 1 .. {C['TTFS_FMT_MAX_DIMS']}")
        dims = _get(data, "4Q", base + C["TTFS_FMT_T_DIMS"], f"tensor {index} dims")[:ndim]
        offset = _get(data, "Q", base + C["TTFS_FMT_T_DATA_OFFSET"], f"tensor {index} data_offset")
        size = _get(data, "Q", base + C["TTFS_FMT_T_DATA_SIZE"], f"tensor {index} data_size")
        count = int(np.prod(dims, dtype=np.uint64)) if dims else 0
        if size != 4 * count or offset + size > len(data) - crc_size:
            raise ValueError(f"tensor {index}: data_offset {offset} / data_size {size} do not fit "
                             f"dims {list(dims)} inside the file")
        tensors.append(np.frombuffer(data, dtype="<f4", count=count, offset=offset)
                       .astype(np.float32).reshape(dims))

    if metadata_offset + metadata_size > len(data) - crc_size:
        raise ValueError(f"metadata_offset {metadata_offset} + metadata_size {metadata_size} "
                         f"lies outside the file")
    raw = data[metadata_offset:metadata_offset + metadata_size]
    metadata = json.loads(raw.decode("utf-8")) if raw else {}

    def tensor(index: int, what: str):
        if index == _NO_TENSOR:
            return None
        if not 0 <= index < len(tensors):
            raise ValueError(f"{what} {index}, expected -1 or 0 .. {len(tensors) - 1}")
        return tensors[index]

    layers = []
    for index in range(layer_count):
        base = layer_table + index * C["TTFS_FMT_LAYER_RECORD_SIZE"]
        name_field = data[base + C["TTFS_FMT_L_NAME"]:base + C["TTFS_FMT_L_NAME"] + C["TTFS_FMT_NAME_SIZE"]]
        name = name_field.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        kind = _name_of(_KINDS, _get(data, "I", base + C["TTFS_FMT_L_KIND"], f"layer {index} kind"))
        g = lambda fmt, key: _get(data, fmt, base + C[key], f"layer {index} {key}")  # noqa: E731
        layer = Layer(kind=kind, name=name, out_shape=g("III", "TTFS_FMT_L_OUT_H"),
                      depth=g("i", "TTFS_FMT_L_DEPTH"), kernel=g("II", "TTFS_FMT_L_KERNEL_H"),
                      stride=g("II", "TTFS_FMT_L_STRIDE_H"),
                      padding=_name_of(_PADDINGS, g("I", "TTFS_FMT_L_PADDING")),
                      pool_mode=_name_of(_POOL_MODES, g("I", "TTFS_FMT_L_POOL_MODE")),
                      weights=tensor(g("i", "TTFS_FMT_L_WEIGHT_TENSOR"), f"layer {index} weight_tensor"),
                      bias=tensor(g("i", "TTFS_FMT_L_BIAS_TENSOR"), f"layer {index} bias_tensor"),
                      input_divisor=g("f", "TTFS_FMT_L_INPUT_DIVISOR"))
        if kind in _NEURON_KINDS:
            tau_fire, td_fire, tau_integ, td_integ, vth0 = g("fffff", "TTFS_FMT_L_TAU_FIRE")
            layer.neuron = NeuronParams(tau_fire=tau_fire, td_fire=td_fire, tau_integ=tau_integ,
                                        td_integ=td_integ, vth0=vth0,
                                        integ_window=g("ii", "TTFS_FMT_L_INTEG_START"),
                                        fire_window=g("ii", "TTFS_FMT_L_FIRE_START"))
        layers.append(layer)
    return ModelSpec(layers=layers, time_steps=time_steps, readout=readout, metadata=metadata)


def read_model(path) -> ModelSpec:
    return from_bytes(Path(path).read_bytes())
