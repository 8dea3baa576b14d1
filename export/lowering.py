"""From a Keras model to the layers a model file holds: conv2d, maxpool, flatten, dense.

The model file knows four layer kinds. Everything else a Keras CNN may contain is either the
identity at inference (Dropout, random augmentation layers: dropped), an activation the neurons
already are (ReLU), or a linear map that is folded into the next weight layer, exactly (up to
float rounding):

- BatchNormalization right after a Conv2D/Dense (before its activation): fused into that layer
  (W_f = W * inv, b_f = (b - mean) * inv + beta, docs/ALGORITHM.md section 2).
- Any other per-channel affine map y -> a*y + c: a BatchNormalization after the ReLU (or after a
  pool, or on the input), a Rescaling layer (anywhere), and the input scale of a model trained on
  0-255 pixels (a = 255: the SNN takes [0, 1] inputs). It is folded into the NEXT weight layer:
  W' = W * a (per input channel), b' = b + sum over the kernel of W * c. Exact when the next
  layer reads no zero padding. A SAME convolution that pads is different: Keras pads the
  shifted map a*y + c with zeros, but the shift folded into the bias would act on the padded
  border positions too, so a shift c != 0 before a convolution that pads is refused (a scale
  alone is fine). A max pool between is exact for a >= 0 (max(a*y + c) = a*max(y) + c) and
  refused for a negative scale; a ReLU between cannot be crossed and is refused.
- AveragePooling2D: folded into the next weight layer by composing the two linear maps: before
  a VALID convolution (kernel K, stride S) a VALID pool (k, s) becomes one convolution with
  kernel (K-1)*s + k and stride S*s; before Flatten + Dense (any padding) each dense weight is
  spread over the pool's window with weight 1/count. A pool before a SAME convolution that pads,
  or before a max pool, is refused. The model file gets no new layer kind.
- GlobalAveragePooling2D before the classifier: folded into the Dense that follows (each
  channel's weight spread over the h*w positions with weight 1/(h*w)).
- GlobalMaxPooling2D: a max pool whose window is the whole map, then a flatten.
- ZeroPadding2D: folded into the padding of the next Conv2D/MaxPooling2D when the result is
  VALID or SAME padding of the unpadded input; otherwise refused (the model file holds VALID
  and SAME only).
- A ReLU on the output layer: kept in the ANN; the SNN reads the output potentials before it
  (argmax), which differs only where every output is negative. A softmax on the output layer
  does not change the argmax and is dropped. Both are noted.

`lower_keras_model` returns the layers (export.convert.AnnLayer) in a list that also carries
`notes`: one sentence per fold, for the conversion report and the model file's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from export.convert import INPUT_NAME, NEURON_KINDS, AnnLayer, fold_batch_norm

OUTPUT_ACTIVATIONS = ("relu", "softmax", "linear")


class Lowered(list):
    """A list of AnnLayers plus what was folded on the way (notes) and output flags."""

    def __init__(self, layers=(), notes=(), output_relu: bool = False,
                 input_scale: float = 1.0, output_softmax: bool = False):
        super().__init__(layers)
        self.notes = list(notes)
        self.output_relu = output_relu
        self.output_softmax = output_softmax  # dropped: the layers give the logits
        self.input_scale = input_scale


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _same_geometry(size: int, kernel: int, stride: int) -> Tuple[int, int, int]:
    """TensorFlow SAME: (output size, pad before, pad after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _window_reads(size: int, kernel: int, stride: int, padding: str,
                  pad: Tuple[int, int] = (0, 0)) -> Tuple[int, int]:
    """(output size, offset of the first window relative to the unpadded input) along one axis,
    for an explicit zero padding `pad` (before, after) followed by a VALID or SAME window."""
    padded = size + pad[0] + pad[1]
    if padding == "same":
        out, before, _ = _same_geometry(padded, kernel, stride)
        return out, pad[0] + before
    if padded < kernel:
        raise ValueError(f"window {kernel} larger than the (padded) input {padded}")
    return (padded - kernel) // stride + 1, pad[0]


def _as_padding(size: int, kernel: int, stride: int, out: int, offset: int) -> Optional[str]:
    """'valid' or 'same' when a window of that geometry reads exactly like one of them on the
    unpadded input, else None."""
    if offset == 0 and size >= kernel and out == (size - kernel) // stride + 1:
        return "valid"
    same_out, same_before, _ = _same_geometry(size, kernel, stride)
    if offset == same_before and out == same_out:
        return "same"
    return None


def _reads_padding(size: int, kernel: int, stride: int, padding: str) -> bool:
    if padding == "valid":
        return False
    _, before, after = _same_geometry(size, kernel, stride)
    return before + after > 0


@dataclass
class _Op:
    """A linear map waiting to be folded into the next weight layer."""

    kind: str  # "affine" | "avgpool" | "gap" | "flatten" | "pad"
    layer: str  # the Keras layer(s) it came from, for messages
    shape: Tuple[int, ...]  # the shape of its input tensor (h, w, c) or (n,)
    scale: Optional[np.ndarray] = None  # affine: per channel / feature (float64)
    shift: Optional[np.ndarray] = None
    kernel: Tuple[int, int] = (0, 0)  # avgpool
    stride: Tuple[int, int] = (0, 0)
    padding: str = "valid"
    pad: Tuple[Tuple[int, int], Tuple[int, int]] = ((0, 0), (0, 0))  # pad: (top, bottom), (l, r)


@dataclass
class _Weights:
    """The weight layer being folded: a convolution on a spatial input or a dense layer on a
    flat one; "spatial" is a dense layer seen as a VALID convolution over its whole input."""

    kind: str  # "conv2d" | "dense" | "spatial"
    weights: np.ndarray  # float64: HWIO for conv2d/spatial, [in, out] for dense
    bias: np.ndarray  # float64 [out]
    stride: Tuple[int, int] = (1, 1)
    padding: str = "valid"
    input_shape: Tuple[int, ...] = ()  # the shape the layer reads (before the pending ops)
    pad: Tuple[Tuple[int, int], Tuple[int, int]] = ((0, 0), (0, 0))


def _where(model_name: str, layer) -> str:
    return f"model '{model_name}': layer '{layer.name}' ({type(layer).__name__})"


def _affine_of_bn(bn: dict) -> Tuple[np.ndarray, np.ndarray]:
    inv = np.asarray(bn["gamma"], np.float64) / np.sqrt(
        np.asarray(bn["moving_variance"], np.float64) + np.float32(bn["epsilon"]))
    shift = np.asarray(bn["beta"], np.float64) - np.asarray(bn["moving_mean"], np.float64) * inv
    return inv, shift


def _rescaling_affine(layer, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    config = layer.get_config()
    scale = np.broadcast_to(np.asarray(config.get("scale", 1.0), np.float64).reshape(-1),
                            (channels,)) if np.size(config.get("scale", 1.0)) in (1, channels) \
        else None
    offset = np.broadcast_to(np.asarray(config.get("offset", 0.0), np.float64).reshape(-1),
                             (channels,)) if np.size(config.get("offset", 0.0)) in (1, channels) \
        else None
    if scale is None or offset is None:
        raise ValueError(f"Rescaling '{layer.name}': scale {config.get('scale')} / offset "
                         f"{config.get('offset')}; expected one number or one per channel "
                         f"({channels})")
    return np.array(scale), np.array(offset)


def _compose_avgpool_conv(w: np.ndarray, pool: Tuple[int, int], stride: Tuple[int, int]
                          ) -> np.ndarray:
    """The kernel of (VALID avg pool `pool`/`stride`, then VALID conv `w`) as one convolution:
    kernel (K-1)*s + k per axis; the convolution's stride is multiplied by s by the caller."""
    kh, kw, cin, cout = w.shape
    (ph, pw), (sh, sw) = pool, stride
    out = np.zeros(((kh - 1) * sh + ph, (kw - 1) * sw + pw, cin, cout), np.float64)
    part = w / float(ph * pw)
    for v in range(ph):
        for u in range(pw):
            out[v:v + (kh - 1) * sh + 1:sh, u:u + (kw - 1) * sw + 1:sw] += part
    return out


def _avgpool_adjoint(w: np.ndarray, in_hw: Tuple[int, int], pool: Tuple[int, int],
                     stride: Tuple[int, int], padding: str) -> np.ndarray:
    """Spatial weights over the pool's output (ph, pw, c, o) -> weights over its input
    (h, w, c, o): each pooled position's weight spread over its window, divided by the number
    of positions inside the input (Keras's SAME average excludes the padding)."""
    (h, wd), (kh, kw), (sh, sw) = in_hw, pool, stride
    oh, ow = w.shape[:2]
    top = _same_geometry(h, kh, sh)[1] if padding == "same" else 0
    left = _same_geometry(wd, kw, sw)[1] if padding == "same" else 0
    rows = np.arange(oh)[:, None] * sh - top + np.arange(kh)[None, :]  # (oh, kh)
    cols = np.arange(ow)[:, None] * sw - left + np.arange(kw)[None, :]
    counts = ((rows >= 0) & (rows < h)).sum(1)[:, None] * ((cols >= 0) & (cols < wd)).sum(1)[None]
    part = w / counts[:, :, None, None]
    out = np.zeros((h, wd) + w.shape[2:], np.float64)
    for v in range(kh):
        r = rows[:, v]
        keep_r = (r >= 0) & (r < h)
        for u in range(kw):
            c = cols[:, u]
            keep_c = (c >= 0) & (c < wd)
            out[np.ix_(r[keep_r], c[keep_c])] += part[np.ix_(keep_r, keep_c)]
    return out


class _Lowering:
    def __init__(self, model, input_scale: float):
        from export.keras_model import IDENTITY_LAYERS, check_supported

        self.model = model
        self.name = model.name
        self.layers = check_supported(model)
        self.identity = IDENTITY_LAYERS
        self.shape: Tuple[int, ...] = tuple(int(v) for v in model.inputs[0].shape[1:])
        self.result: List[AnnLayer] = []
        self.notes: List[str] = []
        self.pending: List[_Op] = []
        self.open: Optional[AnnLayer] = None  # the weight layer a BN/ReLU right after it joins
        self.nonnegative = True  # pixels and ReLU outputs; tracked to accept redundant ReLUs
        self.output_relu = False
        self.output_softmax = False
        self.input_scale = float(input_scale)
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale {input_scale}; expected a finite value > 0 (1 for "
                             "a model trained on [0, 1] pixels, 255 for 0-255 pixels)")
        if self.input_scale != 1.0:
            channels = self.shape[-1]
            self.pending.append(_Op("affine", f"the input scale {self.input_scale:g} (a model "
                                    f"trained on 0-{self.input_scale:g} pixels)", self.shape,
                                    scale=np.full(channels, self.input_scale),
                                    shift=np.zeros(channels)))

    # ---- helpers ---------------------------------------------------------------------------

    def fail(self, layer, message: str):
        raise ValueError(f"{_where(self.name, layer)} {message}")

    def pending_kinds(self) -> List[str]:
        return [op.kind for op in self.pending]

    def add_affine(self, layer, scale, shift, what: str) -> None:
        """A per-channel affine map on the current tensor: composed with a pending one."""
        if self.pending and self.pending[-1].kind == "affine":
            last = self.pending[-1]
            last.shift = scale * last.shift + shift
            last.scale = scale * last.scale
            last.layer += f" and {what}"
        elif self.pending and self.pending[-1].kind == "pad":
            self.fail(layer, "comes between a ZeroPadding2D and the layer it pads; expected the "
                             "ZeroPadding2D directly before a Conv2D or MaxPooling2D")
        else:
            self.pending.append(_Op("affine", what, self.shape, scale=np.array(scale, np.float64),
                                    shift=np.array(shift, np.float64)))
        if np.any(scale < 0) or np.any(shift < 0):
            self.nonnegative = False

    # ---- layers ----------------------------------------------------------------------------

    def run(self) -> Lowered:
        for index, layer in enumerate(self.layers):
            kind = type(layer).__name__
            if layer.name == INPUT_NAME:
                self.fail(layer, f"uses the name '{INPUT_NAME}', reserved for the input pixels; "
                                 "rename the layer")
            if kind in self.identity:
                continue
            handler = getattr(self, "on_" + kind)
            handler(layer, last=index == len(self.layers) - 1 or all(
                type(rest).__name__ in self.identity for rest in self.layers[index + 1:]))
            self.shape = tuple(int(v) for v in layer.output.shape[1:])
        return self.finish()

    def _activation(self, layer, name: str, last: bool) -> None:
        """A ReLU (or at the output, softmax/linear) after whatever came before."""
        if name == "linear":
            return
        if name == "softmax":
            if not last or self.open is None or self.pending:
                self.fail(layer, "is a softmax inside the network; expected softmax only as "
                                 "the output layer's activation")
            self.notes.append(f"softmax after the output layer '{self.open.name}' dropped: it "
                              "does not change the argmax readout")
            self.output_softmax = True
            return
        if self.open is not None and not self.pending and not self.open.relu:
            self.open.relu = True
            self.nonnegative = True
            return
        if self.nonnegative and not any(op.kind == "affine" for op in self.pending):
            self.notes.append(f"ReLU '{layer.name}' dropped: its input is never negative")
            return
        if any(op.kind == "affine" for op in self.pending):
            ops = [op.layer for op in self.pending if op.kind == "affine"]
            self.fail(layer, f"follows {', '.join(ops)}, a per-channel scale and shift that "
                             "cannot be folded across a ReLU into the next weight layer; "
                             "expected BatchNormalization before the ReLU (it is then fused "
                             "into the layer before)")
        self.fail(layer, "does not follow a Conv2D or Dense (or its BatchNormalization); "
                         "expected ReLU right after one")

    def on_ReLU(self, layer, last):
        self._activation(layer, "relu", last)

    def on_Activation(self, layer, last):
        from export.keras_model import _activation_name

        self._activation(layer, _activation_name(layer.activation), last)

    def on_Softmax(self, layer, last):
        self._activation(layer, "softmax", last)

    def on_Rescaling(self, layer, last):
        channels = self.shape[-1]
        scale, shift = _rescaling_affine(layer, channels)
        self.open = None
        self.add_affine(layer, scale, shift, f"Rescaling '{layer.name}' (scale "
                        f"{np.unique(scale).round(6).tolist()}, offset "
                        f"{np.unique(shift).round(6).tolist()})")

    def on_BatchNormalization(self, layer, last):
        from export.convert import _bn_parameters

        channels = self.shape[-1]
        bn = _bn_parameters(layer, channels)
        if self.open is not None and not self.open.relu and not self.pending:
            fused = self.open
            if fused.bn is not None or getattr(fused, "_bn_count", 0):
                # a second BN in a row: fold it too; the reference time-constant rule, which
                # re-applies one BN, then sees none
                self.notes.append(f"BatchNormalization '{layer.name}' fused into '{fused.name}' "
                                  "as a second batch norm")
                fused.bn = None
            else:
                fused.bn = bn
            fused._bn_count = getattr(fused, "_bn_count", 0) + 1
            fused.weights, fused.bias = fold_batch_norm(fused.weights, fused.bias, bn)
            return
        scale, shift = _affine_of_bn(bn)
        after = f"after the ReLU of '{self.open.name}'" if self.open is not None and \
            self.open.relu else "not right after a Conv2D/Dense"
        if last:
            self.fail(layer, f"comes {after} at the end of the network: no weight layer follows "
                             "to fold it into; expected BatchNormalization before the output "
                             "layer's activation")
        self.open = None
        self.add_affine(layer, scale, shift, f"BatchNormalization '{layer.name}' ({after})")

    def on_ZeroPadding2D(self, layer, last):
        config = layer.get_config()
        padding = config["padding"]
        if isinstance(padding, int):
            pad = ((padding, padding), (padding, padding))
        else:
            pad = tuple(_pair(p) for p in padding)
        if self.pending and self.pending[-1].kind == "pad":
            previous = self.pending.pop()
            pad = tuple((a[0] + b[0], a[1] + b[1]) for a, b in zip(previous.pad, pad))
            shape = previous.shape
            name = f"{previous.layer} and '{layer.name}'"
        else:
            shape = self.shape
            name = f"'{layer.name}'"
        self.open = None
        self.pending.append(_Op("pad", name, shape, pad=pad))

    def _take_pad(self, layer, kernel, stride, padding) -> str:
        """Fold a pending ZeroPadding2D into this window's padding: 'valid' or 'same', or a
        clear refusal."""
        if not self.pending or self.pending[-1].kind != "pad":
            return padding
        op = self.pending.pop()
        h, w = op.shape[:2]
        geometry = []
        for size, k, s, p in zip((h, w), kernel, stride, op.pad):
            out, offset = _window_reads(size, k, s, padding, p)
            geometry.append(_as_padding(size, k, s, out, offset))
        if geometry[0] is not None and geometry[0] == geometry[1]:
            self.notes.append(f"ZeroPadding2D {op.layer} {op.pad} folded into '{layer.name}' "
                              f"({padding.upper()}): {geometry[0].upper()} padding of its "
                              f"{h}x{w} input")
            return geometry[0]
        same = [_same_geometry(size, k, s)[1] for size, k, s in zip((h, w), kernel, stride)]
        self.fail(layer, f"after ZeroPadding2D {op.layer} (padding {op.pad}) reads its {h}x{w} "
                         f"input with a {kernel[0]}x{kernel[1]} window, stride {stride}: that "
                         f"is neither VALID nor SAME padding (SAME would pad {same[0]} rows on "
                         f"top and {same[1]} columns on the left); the model file holds VALID "
                         "and SAME padding only")

    def on_Conv2D(self, layer, last):
        if len(self.shape) != 3:
            self.fail(layer, "follows a Flatten; expected an image input")
        config = layer.get_config()
        kernel = np.array(layer.kernel.numpy(), dtype=np.float32)
        bias = (np.array(layer.bias.numpy(), dtype=np.float32)
                if getattr(layer, "bias", None) is not None else None)
        stride = _pair(config["strides"])
        padding = self._take_pad(layer, kernel.shape[:2], stride, config["padding"])
        from export.keras_model import _activation_name

        new = AnnLayer("conv2d", layer.name, kernel, bias, kernel=tuple(kernel.shape[:2]),
                       stride=stride, padding=padding)
        self._fold_pending(layer, new)
        self._add_weight_layer(layer, new, _activation_name(layer.activation), last)

    def on_Dense(self, layer, last):
        if len(self.shape) != 1:
            self.fail(layer, f"gets an image input of shape {self.shape}; expected a Flatten "
                             "(or GlobalAveragePooling2D) before it")
        kernel = np.array(layer.kernel.numpy(), dtype=np.float32)
        bias = (np.array(layer.bias.numpy(), dtype=np.float32)
                if getattr(layer, "bias", None) is not None else None)
        from export.keras_model import _activation_name

        new = AnnLayer("dense", layer.name, kernel, bias)
        self._fold_pending(layer, new)
        self._add_weight_layer(layer, new, _activation_name(layer.activation), last)

    def _add_weight_layer(self, layer, new: AnnLayer, activation: str, last: bool) -> None:
        self.result.append(new)
        self.open = new
        self.nonnegative = False
        if activation == "relu":
            new.relu = True
            self.nonnegative = True
        elif activation == "softmax":
            self._activation(layer, "softmax", last)
        elif activation != "linear":
            self.fail(layer, f"has activation {activation!r}; expected 'linear' or 'relu'")

    def on_MaxPooling2D(self, layer, last):
        if len(self.shape) != 3:
            self.fail(layer, "follows a Flatten; expected an image input")
        config = layer.get_config()
        pool = _pair(config["pool_size"])
        stride = pool if config.get("strides") is None else _pair(config["strides"])
        had_pad = bool(self.pending) and self.pending[-1].kind == "pad"
        if had_pad and not self.nonnegative:
            self.fail(layer, "follows a ZeroPadding2D on values that may be negative: a padded "
                             "zero could win the max; expected the padding after a ReLU")
        padding = self._take_pad(layer, pool, stride, config["padding"])
        self._max_pool(layer, pool, stride, padding, layer.name)

    def on_GlobalMaxPooling2D(self, layer, last):
        h, w = self.shape[:2]
        self._max_pool(layer, (h, w), (h, w), "valid", layer.name)
        if not layer.get_config().get("keepdims", False):
            self.result.append(AnnLayer("flatten", f"{layer.name}_flatten"[:31]))
        self.notes.append(f"GlobalMaxPooling2D '{layer.name}': a {h}x{w} max pool over the "
                          "whole map")

    def _max_pool(self, layer, pool, stride, padding, name) -> None:
        blocking = [op for op in self.pending if op.kind in ("avgpool", "gap", "pad")]
        if blocking:
            self.fail(layer, f"follows {blocking[0].layer} ({blocking[0].kind}): a linear map "
                             "cannot be folded across a max pool; expected AveragePooling2D "
                             "right before a Conv2D or Dense")
        for op in self.pending:  # an affine map commutes with max only for scales >= 0
            negative = np.flatnonzero(op.scale < 0)
            if negative.size:
                self.fail(layer, f"follows {op.layer}, which scales channel(s) "
                                 f"{negative[:8].tolist()} by a negative factor: max pooling "
                                 "does not commute with a negative scale (max becomes min), so "
                                 "it cannot be folded into the next weight layer; expected "
                                 "BatchNormalization before the ReLU, or after the pool")
            self.notes.append(f"max pool '{name}' after {op.layer}: exact, every scale is >= 0 "
                              "(max(a*y + c) = a*max(y) + c)")
        self.result.append(AnnLayer("maxpool", name, kernel=tuple(pool), stride=tuple(stride),
                                    padding=padding))
        self.open = None

    def on_AveragePooling2D(self, layer, last):
        if len(self.shape) != 3:
            self.fail(layer, "follows a Flatten; expected an image input")
        if self.pending and self.pending[-1].kind == "pad":
            self.fail(layer, "follows a ZeroPadding2D; expected the padding directly before a "
                             "Conv2D or MaxPooling2D")
        config = layer.get_config()
        pool = _pair(config["pool_size"])
        stride = pool if config.get("strides") is None else _pair(config["strides"])
        self.pending.append(_Op("avgpool", f"AveragePooling2D '{layer.name}'", self.shape,
                                kernel=pool, stride=stride, padding=config["padding"]))
        self.open = None

    def on_GlobalAveragePooling2D(self, layer, last):
        if self.pending and self.pending[-1].kind == "pad":
            self.fail(layer, "follows a ZeroPadding2D; expected the padding directly before a "
                             "Conv2D or MaxPooling2D")
        if layer.get_config().get("keepdims", False):
            self.fail(layer, "has keepdims=True; expected keepdims=False (then a Dense)")
        self.pending.append(_Op("gap", f"GlobalAveragePooling2D '{layer.name}'", self.shape))
        self.open = None

    def on_Flatten(self, layer, last):
        if len(self.shape) == 1:
            return
        if self.pending and self.pending[-1].kind == "pad":
            self.fail(layer, "follows a ZeroPadding2D; expected the padding directly before a "
                             "Conv2D or MaxPooling2D")
        self.pending.append(_Op("flatten", layer.name, self.shape))
        self.open = None

    # ---- folding ---------------------------------------------------------------------------

    def _fold_pending(self, layer, new: AnnLayer) -> None:
        """Fold the pending maps (last first) into the weight layer `new`, in place."""
        if not self.pending:
            return
        w = new.weights.astype(np.float64)
        b = np.zeros(w.shape[-1]) if new.bias is None else new.bias.astype(np.float64)
        if new.kind == "conv2d":
            state = _Weights("conv2d", w, b, stride=new.stride, padding=new.padding,
                             input_shape=self.shape)
        else:
            state = _Weights("dense", w, b, input_shape=self.shape)
        flatten_name = None
        folded = []
        for op in reversed(self.pending):
            if op.kind == "flatten":
                state.weights = state.weights.reshape(op.shape + (w.shape[-1],))
                state.kind, state.input_shape = "spatial", op.shape
                flatten_name = op.layer
            elif op.kind == "gap":
                h, wd, c = op.shape
                state.weights = np.broadcast_to(state.weights / float(h * wd),
                                                (h, wd, c, w.shape[-1])).copy()
                state.kind, state.input_shape = "spatial", op.shape
                flatten_name = op.layer.split("'")[1]
                folded.append(f"{op.layer} folded into '{new.name}' (each weight spread over "
                              f"the {h}x{wd} positions, divided by {h * wd})")
            elif op.kind == "avgpool":
                self._fold_avgpool(layer, new, state, op)
                folded.append(f"{op.layer} ({op.kernel[0]}x{op.kernel[1]}, stride "
                              f"{op.stride}, {op.padding.upper()}) folded into '{new.name}'")
            elif op.kind == "affine":
                self._fold_affine(layer, new, state, op)
                folded.append(f"{op.layer} folded into '{new.name}'")
            else:  # a pad not taken by this layer
                self.fail(layer, f"follows ZeroPadding2D {op.layer} with something between; "
                                 "expected the padding directly before a Conv2D or "
                                 "MaxPooling2D")
        self.pending = []
        if state.kind == "spatial":  # back to a dense layer on the flattened map (NHWC order)
            state.weights = state.weights.reshape(-1, w.shape[-1])
            self.result.append(AnnLayer("flatten", (flatten_name or f"{new.name}_flatten")[:31]))
        had_bias = new.bias is not None
        new.weights = state.weights.astype(np.float32)
        new.bias = state.bias.astype(np.float32) if had_bias or np.any(state.bias != 0) \
            else None
        if new.kind == "conv2d":
            new.kernel = tuple(int(v) for v in state.weights.shape[:2])
            new.stride = tuple(int(v) for v in state.stride)
            new.padding = state.padding
        self.notes.extend(folded)

    def _conv_reads_padding(self, state: _Weights) -> bool:
        if state.kind != "conv2d":
            return False
        h, w = state.input_shape[:2]
        kh, kw = state.weights.shape[:2]
        return (_reads_padding(h, kh, state.stride[0], state.padding)
                or _reads_padding(w, kw, state.stride[1], state.padding))

    def _fold_affine(self, layer, new: AnnLayer, state: _Weights, op: _Op) -> None:
        scale, shift = op.scale, op.shift
        if np.any(shift != 0) and self._conv_reads_padding(state):
            h, w = state.input_shape[:2]
            self.fail(layer, f"({state.padding.upper()} padding, {state.weights.shape[0]}x"
                             f"{state.weights.shape[1]} kernel on a {h}x{w} input) reads zero "
                             f"padding after {op.layer}, which shifts its channels by up to "
                             f"{np.abs(shift).max():.4g}: folded into '{new.name}''s bias the "
                             "shift would also reach the padded border positions, which Keras "
                             "leaves at zero, so the result would be wrong at the image borders. "
                             "Expected BatchNormalization before the ReLU (then it is fused "
                             "into the layer before), padding='valid' here, or a Rescaling "
                             "without offset")
        if state.kind == "dense":
            if scale.shape[0] != state.weights.shape[0]:
                raise ValueError(f"{op.layer}: {scale.shape[0]} values for a {state.weights.shape[0]}"
                                 f"-input '{new.name}'")
            state.bias = state.bias + shift @ state.weights
            state.weights = state.weights * scale[:, None]
        else:  # conv2d / spatial: HWIO, per input channel (axis 2)
            state.bias = state.bias + np.einsum("hwio,i->o", state.weights, shift)
            state.weights = state.weights * scale[None, None, :, None]

    def _fold_avgpool(self, layer, new: AnnLayer, state: _Weights, op: _Op) -> None:
        h, w = op.shape[:2]
        pooled = state.input_shape[:2]
        if state.kind == "spatial":  # weights over the whole pooled map: spread them back
            assert tuple(state.weights.shape[:2]) == tuple(pooled)
            state.weights = _avgpool_adjoint(state.weights, (h, w), op.kernel, op.stride,
                                             op.padding)
            state.input_shape = op.shape
            return
        if state.kind != "conv2d":
            self.fail(layer, f"follows {op.layer} on a flat input; expected the pool before a "
                             "Flatten")
        pool_pads = (_reads_padding(h, op.kernel[0], op.stride[0], op.padding)
                     or _reads_padding(w, op.kernel[1], op.stride[1], op.padding))
        if pool_pads:
            self.fail(layer, f"follows {op.layer} with SAME padding that pads its {h}x{w} input: "
                             "Keras averages border windows over fewer positions, which no "
                             "single convolution does; expected padding='valid' in the pool "
                             "(or a Flatten + Dense after it)")
        if self._conv_reads_padding(state):
            self.fail(layer, f"reads zero padding ({state.padding.upper()}) after {op.layer}: "
                             "padding the pooled map is not a padding of the unpooled one, so "
                             "the two cannot be one convolution; expected padding='valid' in "
                             f"'{layer.name}'")
        state.weights = _compose_avgpool_conv(state.weights, op.kernel, op.stride)
        state.stride = (state.stride[0] * op.stride[0], state.stride[1] * op.stride[1])
        state.padding = "valid"
        state.input_shape = op.shape

    def finish(self) -> Lowered:
        if not self.result or self.result[-1].kind not in NEURON_KINDS:
            raise ValueError(f"model '{self.name}': the last layer must be a Conv2D or Dense "
                             "(the output layer)")
        leftover = [op for op in self.pending if op.kind != "flatten" or
                    int(np.prod(op.shape[:-1])) != 1]
        if leftover:
            raise ValueError(f"model '{self.name}': {leftover[0].layer} comes after the output "
                             f"layer '{self.result[-1].name}': no weight layer follows to fold "
                             "it into; expected the network to end with a Conv2D or Dense")
        output = self.result[-1]
        if output.relu:
            self.output_relu = True
            self.notes.append(f"the output layer '{output.name}' has a ReLU: the SNN reads its "
                              "potentials before the ReLU (argmax), which differs from the ANN "
                              "only where every output is negative (the ANN then ties at 0)")
        hidden_linear = [layer.name for layer in self.result[:-1]
                         if layer.kind in NEURON_KINDS and not layer.relu]
        if hidden_linear:
            import warnings

            # A spiking neuron cannot carry a negative value: the SNN rectifies these layers
            # anyway, so the converted network differs from the Keras one where they go negative.
            warnings.warn(f"model '{self.name}': hidden layers {hidden_linear} have no ReLU; the "
                          "spiking network behaves as if they had one", stacklevel=3)
        return Lowered(self.result, self.notes, self.output_relu, self.input_scale,
                       self.output_softmax)


def lower_keras_model(model, input_scale: float = 1.0) -> Lowered:
    """The Keras model as converter layers with everything foldable folded (module doc).

    input_scale: the pixel range the model expects (1: [0, 1]; 255: 0-255 pixels); the SNN's
    inputs are always in [0, 1], so this scale is folded into the first weight layer. Raises
    ValueError naming the layer, its class and what is supported for anything else.
    """
    return _Lowering(model, input_scale).run()
