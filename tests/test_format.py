"""The model-file writer (export/ttfs_format.py) against docs/FORMAT.md.

Byte-level checks read the file with struct at the offsets FORMAT.md states, written out here
as literals, so they do not share the writer's constants or code.
"""
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from export.ttfs_format import (CONST, Layer, ModelSpec, NeuronParams, build_model, conv2d, dense,
                                flatten, from_bytes, input_layer, maxpool, read_model, to_bytes,
                                with_crc, write_model)

ROOT = Path(__file__).resolve().parent.parent


def rng_weights(seed, *shape):
    return np.random.default_rng(seed).normal(0.0, 0.5, size=shape).astype(np.float32)


def small_cnn(readout="vmem", pool_mode="or", padding="valid", metadata=None, bias=True):
    """input 8x8x2 -> conv 3x3 -> maxpool -> conv 3x3 stride 2 -> flatten -> dense 3."""
    conv2_out = (1, 1) if padding == "valid" else (2, 2)  # (3-3)//2+1 or ceil(3/2)
    layers = [
        input_layer((8, 8, 2), divisor=255.0),
        conv2d("conv1", rng_weights(1, 3, 3, 2, 4), rng_weights(2, 4) if bias else None),
        maxpool("pool1", (2, 2), mode=pool_mode, padding=padding),
        conv2d("conv2", rng_weights(3, 3, 3, 4, 5), rng_weights(4, 5) if bias else None,
               stride=(2, 2), padding=padding),
        flatten("flat"),
        dense("fc1", rng_weights(5, conv2_out[0] * conv2_out[1] * 5, 3), rng_weights(6, 3) if bias else None),
    ]
    return build_model(layers, time_steps=400, readout=readout, metadata=metadata)


SPECS = {
    "valid_or_vmem": lambda: small_cnn(metadata={"source": "test", "lambdas": [1.0, 2.5]}),
    "same_earliest_first_spike": lambda: small_cnn("first_spike", "earliest", "same",
                                                   metadata={"note": "Größe µ"}),
    "no_bias_no_metadata": lambda: small_cnn(bias=False),
    "dense_only": lambda: build_model(
        [input_layer((1, 1, 6), divisor=2.0,
                     neuron=NeuronParams(tau_fire=17.5, vth0=0.5)),
         dense("out", rng_weights(7, 6, 4), rng_weights(8, 4),
               neuron=NeuronParams(tau_fire=11.0, td_fire=-2.0, tau_integ=9.0, td_integ=0.25))],
        time_steps=100, readout="first_spike", time_fire_start=30, time_fire_duration=40),
    "conv_output": lambda: build_model(
        [input_layer((5, 5, 1)), conv2d("head", rng_weights(9, 5, 5, 1, 10))], time_steps=200),
}


def assert_same_spec(got: ModelSpec, want: ModelSpec):
    assert got.time_steps == want.time_steps
    assert got.readout == want.readout
    assert got.metadata == (want.metadata or {})
    assert len(got.layers) == len(want.layers)
    for a, b in zip(got.layers, want.layers):
        assert (a.kind, a.name, tuple(a.out_shape), a.depth) == (b.kind, b.name, tuple(b.out_shape), b.depth)
        assert tuple(a.kernel) == tuple(b.kernel) and tuple(a.stride) == tuple(b.stride)
        assert (a.padding, a.pool_mode) == (b.padding, b.pool_mode)
        assert a.input_divisor == np.float32(b.input_divisor)
        for x, y in ((a.weights, b.weights), (a.bias, b.bias)):
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == np.float32 and x.shape == y.shape
                np.testing.assert_array_equal(x, y)
        assert (a.neuron is None) == (b.neuron is None)
        if a.neuron is not None:
            for name in ("tau_fire", "td_fire", "tau_integ", "td_integ", "vth0"):
                assert getattr(a.neuron, name) == np.float32(getattr(b.neuron, name)), name
            assert tuple(a.neuron.integ_window) == tuple(b.neuron.integ_window)
            assert tuple(a.neuron.fire_window) == tuple(b.neuron.fire_window)


# ---- constants ---------------------------------------------------------------------------------

def test_constants_come_from_the_c_header():
    text = (ROOT / "cuda" / "ttfs_format.h").read_text()
    defines = [line.split()[1] for line in text.splitlines() if line.startswith("#define TTFS_FMT_")]
    assert sorted(CONST) == sorted(defines)
    assert CONST["TTFS_FMT_MAGIC"] == b"TTFSNET\x00"
    assert CONST["TTFS_FMT_VERSION"] == 1 and CONST["VERSION"] == 1  # short names work too
    assert CONST["TTFS_FMT_NO_TENSOR"] == -1
    assert CONST["TTFS_FMT_MAX_LAYER_SIZE"] == 2 ** 28
    with pytest.raises(KeyError):
        CONST["NOT_A_CONSTANT"]


# ---- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SPECS))
def test_round_trip(name, tmp_path):
    spec = SPECS[name]()
    data = to_bytes(spec)
    assert_same_spec(from_bytes(data), spec)
    path = tmp_path / f"{name}.ttfs"
    write_model(spec, path)
    assert path.read_bytes() == data
    assert_same_spec(read_model(path), spec)
    # Writing is deterministic, and a read-back spec writes the same bytes again.
    assert to_bytes(from_bytes(data)) == data


def test_metadata_is_utf8_json():
    spec = SPECS["same_earliest_first_spike"]()
    data = to_bytes(spec)
    offset, size = struct.unpack_from("<QQ", data, 56)
    assert json.loads(data[offset:offset + size].decode("utf-8")) == {"note": "Größe µ"}


# ---- bytes against FORMAT.md's offsets ---------------------------------------------------------

def test_header_bytes_follow_format_md():
    spec = SPECS["valid_or_vmem"]()
    data = to_bytes(spec)
    assert data[0:8] == b"TTFSNET\x00"
    version, header_size, file_size = struct.unpack_from("<IIQ", data, 8)
    assert (version, header_size, file_size) == (1, 128, len(data))
    layer_count, layer_record_size, layer_table = struct.unpack_from("<IIQ", data, 24)
    assert (layer_count, layer_record_size, layer_table) == (6, 128, 128)
    tensor_count, tensor_record_size, tensor_table = struct.unpack_from("<IIQ", data, 40)
    assert (tensor_count, tensor_record_size, tensor_table) == (6, 64, 128 + 128 * 6)
    metadata_offset, metadata_size = struct.unpack_from("<QQ", data, 56)
    assert metadata_offset == tensor_table + 64 * 6
    assert json.loads(data[metadata_offset:metadata_offset + metadata_size]) == spec.metadata
    time_steps, readout, flags = struct.unpack_from("<III", data, 72)
    assert (time_steps, readout, flags) == (400, 0, 0)
    assert data[84:128] == bytes(44)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert struct.unpack_from("<I", to_bytes(SPECS["dense_only"]()), 76)[0] == 1  # first_spike


def layer_record(data, index):
    base = 128 + 128 * index
    record = data[base:base + 128]
    fields = {"name": record[0:32].rstrip(b"\0").decode()}
    (fields["kind"], fields["depth"], *rest) = struct.unpack_from("<Ii3I2I2IIIii5f2i2ifI", record, 32)
    fields["out"], fields["kernel"], fields["stride"] = tuple(rest[0:3]), tuple(rest[3:5]), tuple(rest[5:7])
    fields["padding"], fields["pool_mode"], fields["weight_tensor"], fields["bias_tensor"] = rest[7:11]
    fields["tau_fire"], fields["td_fire"], fields["tau_integ"], fields["td_integ"], fields["vth0"] = rest[11:16]
    fields["integ"], fields["fire"] = tuple(rest[16:18]), tuple(rest[18:20])
    fields["input_divisor"], fields["reserved"] = rest[20:22]
    fields["name_padding"] = record[len(fields["name"]):32]
    return fields


def test_layer_records_follow_format_md():
    data = to_bytes(SPECS["same_earliest_first_spike"]())
    want = [  # name, kind, depth, out, kernel, stride, padding, pool_mode, weight, bias
        ("input", 1, 0, (8, 8, 2), (0, 0), (0, 0), 0, 0, -1, -1),
        ("conv1", 2, 1, (6, 6, 4), (3, 3), (1, 1), 0, 0, 0, 1),
        ("pool1", 3, -1, (3, 3, 4), (2, 2), (2, 2), 1, 1, -1, -1),
        ("conv2", 2, 2, (2, 2, 5), (3, 3), (2, 2), 1, 0, 2, 3),
        ("flat", 4, -1, (1, 1, 20), (0, 0), (0, 0), 0, 0, -1, -1),
        ("fc1", 5, 3, (1, 1, 3), (0, 0), (0, 0), 0, 0, 4, 5),
    ]
    for index, expected in enumerate(want):
        f = layer_record(data, index)
        got = (f["name"], f["kind"], f["depth"], f["out"], f["kernel"], f["stride"], f["padding"],
               f["pool_mode"], f["weight_tensor"], f["bias_tensor"])
        assert got == expected, index
        assert f["reserved"] == 0 and f["name_padding"] == bytes(len(f["name_padding"]))
    inp, conv1, pool, fc1 = (layer_record(data, i) for i in (0, 1, 2, 5))
    assert (inp["tau_fire"], inp["td_fire"], inp["tau_integ"], inp["td_integ"], inp["vth0"]) == (20, 0, 0, 0, 1)
    assert (inp["integ"], inp["fire"], inp["input_divisor"]) == ((0, 0), (0, 80), 255.0)
    assert (conv1["tau_integ"], conv1["integ"], conv1["fire"], conv1["input_divisor"]) == (20, (0, 80), (80, 160), 0)
    assert (fc1["integ"], fc1["fire"]) == ((160, 240), (240, 320))
    # Layers without neurons store zeros in every neuron field.
    assert (pool["tau_fire"], pool["vth0"], pool["integ"], pool["fire"]) == (0, 0, (0, 0), (0, 0))


def test_tensor_records_and_data_follow_format_md():
    spec = SPECS["valid_or_vmem"]()
    data = to_bytes(spec)
    tensor_table, metadata_offset, metadata_size = struct.unpack_from("<QQQ", data, 48)
    arrays = [spec.layers[1].weights, spec.layers[1].bias, spec.layers[3].weights,
              spec.layers[3].bias, spec.layers[5].weights, spec.layers[5].bias]
    previous_end = metadata_offset + metadata_size
    for index, array in enumerate(arrays):
        record = data[tensor_table + 64 * index:tensor_table + 64 * (index + 1)]
        dtype, ndim = struct.unpack_from("<II", record, 0)
        dims = struct.unpack_from("<4Q", record, 8)
        data_offset, data_size, reserved = struct.unpack_from("<QQQ", record, 40)
        assert (dtype, ndim, reserved) == (1, array.ndim, 0)
        assert dims == tuple(array.shape) + (0,) * (4 - array.ndim)
        assert data_offset % 64 == 0 and data_size == 4 * array.size
        assert previous_end <= data_offset < previous_end + 64  # no holes but the alignment
        assert data[previous_end:data_offset] == bytes(data_offset - previous_end)
        assert data[data_offset:data_offset + data_size] == array.astype("<f4").tobytes()
        previous_end = data_offset + data_size
    assert previous_end + 4 == len(data)  # the CRC follows the last tensor


def test_file_without_tensors_ends_after_metadata():
    spec = build_model([input_layer((1, 1, 2)), dense("out", np.ones((2, 2)))], time_steps=10)
    spec.layers[1].weights = None  # check=False: a layer record without tensors
    data = to_bytes(spec, check=False)
    assert struct.unpack_from("<I", data, 40)[0] == 0
    metadata_offset, metadata_size = struct.unpack_from("<QQ", data, 56)
    assert (metadata_offset, metadata_size) == (128 + 2 * 128, 0)
    assert len(data) == metadata_offset + 4


# ---- build_model -------------------------------------------------------------------------------

def mnist_layers(input_neuron=None, conv1_neuron=None, conv2_neuron=None):
    return [input_layer((28, 28, 1), neuron=input_neuron),
            conv2d("conv1", np.zeros((5, 5, 1, 12)), np.zeros(12), neuron=conv1_neuron),
            maxpool("pool1"),
            conv2d("conv2", np.zeros((5, 5, 12, 64)), np.zeros(64), neuron=conv2_neuron),
            maxpool("pool2"), flatten(), dense("fc1", np.zeros((1024, 10)), np.zeros(10))]


def test_build_model_mnist_shapes_depths_windows():
    spec = build_model(mnist_layers(), time_steps=400)
    got = [(l.name, l.out_shape, l.depth) for l in spec.layers]
    assert got == [("input", (28, 28, 1), 0), ("conv1", (24, 24, 12), 1), ("pool1", (12, 12, 12), -1),
                   ("conv2", (8, 8, 64), 2), ("pool2", (4, 4, 64), -1), ("flatten", (1, 1, 1024), -1),
                   ("fc1", (1, 1, 10), 3)]
    windows = {l.name: (l.neuron.integ_window, l.neuron.fire_window) for l in spec.layers if l.neuron}
    assert windows == {"input": ((0, 0), (0, 80)), "conv1": ((0, 80), (80, 160)),
                       "conv2": ((80, 160), (160, 240)), "fc1": ((160, 240), (240, 320))}
    assert [l.neuron for l in spec.layers if l.kind in ("maxpool", "flatten")] == [None] * 3
    assert spec.layers[0].input_divisor == 255.0 and spec.readout == "vmem" and spec.metadata == {}


def test_build_model_chains_integration_constants():
    spec = build_model(mnist_layers(NeuronParams(tau_fire=17.45),
                                    NeuronParams(tau_fire=19.60, td_fire=-3.52),
                                    NeuronParams(tau_fire=20.96, td_fire=-0.065, tau_integ=20.0, td_integ=0.0)),
                       time_steps=400)
    n = {l.name: l.neuron for l in spec.layers if l.neuron}
    assert (n["input"].tau_integ, n["input"].td_integ) == (0.0, 0.0)
    assert (n["conv1"].tau_integ, n["conv1"].td_integ) == (17.45, 0.0)
    # conv2's integration constants were given explicitly: kept, not chained.
    assert (n["conv2"].tau_integ, n["conv2"].td_integ) == (20.0, 0.0)
    assert (n["fc1"].tau_fire, n["fc1"].td_fire) == (20.0, 0.0)
    assert (n["fc1"].tau_integ, n["fc1"].td_integ) == (20.96, -0.065)


def test_build_model_custom_and_clipped_windows():
    spec = build_model(mnist_layers(), time_steps=400, time_fire_start=50, time_fire_duration=80)
    w = {l.name: (l.neuron.integ_window, l.neuron.fire_window) for l in spec.layers if l.neuron}
    assert w == {"input": ((0, 0), (0, 80)), "conv1": ((0, 80), (50, 130)),
                 "conv2": ((50, 130), (100, 180)), "fc1": ((100, 180), (150, 230))}
    spec = build_model(mnist_layers(), time_steps=100)
    w = {l.name: (l.neuron.integ_window, l.neuron.fire_window) for l in spec.layers if l.neuron}
    assert w == {"input": ((0, 0), (0, 80)), "conv1": ((0, 80), (80, 100)),
                 "conv2": ((80, 100), (100, 100)), "fc1": ((100, 100), (100, 100))}
    explicit = NeuronParams(integ_window=(3, 7), fire_window=(7, 9))
    spec = build_model(mnist_layers(conv1_neuron=explicit), time_steps=400)
    assert (spec.layers[1].neuron.integ_window, spec.layers[1].neuron.fire_window) == ((3, 7), (7, 9))


def test_build_model_same_padding_and_strides():
    layers = [input_layer((7, 7, 3)),
              conv2d("c_same", np.zeros((3, 3, 3, 2)), stride=(2, 2), padding="same"),  # ceil(7/2)
              maxpool("p_same", (3, 3), (2, 2), padding="same"),                         # ceil(4/2)
              conv2d("c_valid", np.zeros((2, 1, 2, 6)), stride=(1, 1))]                 # 2-2+1, 2-1+1
    spec = build_model(layers, time_steps=400)
    assert [l.out_shape for l in spec.layers] == [(7, 7, 3), (4, 4, 2), (2, 2, 2), (1, 2, 6)]
    layers = [input_layer((9, 6, 1)), maxpool("p", (3, 2), (2, 3))]  # (9-3)//2+1, (6-2)//3+1
    spec = build_model(layers + [flatten(), dense("d", np.zeros((8, 2)))], time_steps=10)
    assert spec.layers[1].out_shape == (4, 2, 1)


def test_build_model_does_not_modify_its_arguments():
    layers = mnist_layers()
    build_model(layers, time_steps=400)
    assert layers[1].out_shape is None and layers[1].neuron is None and layers[1].depth == -1


@pytest.mark.parametrize("layers, words", [
    ([input_layer((28, 28, 1)), dense("fc", np.zeros((784, 10)))], "dense needs a \\(1, 1, n\\)"),
    ([input_layer((4, 4, 1)), conv2d("c", np.zeros((5, 5, 1, 2)))], "smaller than the kernel"),
    ([input_layer((4, 4, 3)), conv2d("c", np.zeros((3, 3, 1, 2)))], "layer 1 'c': weights shape"),
    ([input_layer((4, 4, 1)), maxpool("p")], "must be conv2d or dense"),
    ([conv2d("c", np.zeros((1, 1, 1, 1))), dense("d", np.zeros((1, 1)))], "first layer must be the input"),
    ([input_layer((4, 4, 1)), conv2d("c", np.zeros((3, 3, 1, 2)), padding="SAME")], "padding 'SAME'"),
])
def test_build_model_rejects_impossible_networks(layers, words):
    with pytest.raises(ValueError, match=words):
        build_model(layers, time_steps=10)


# ---- validation in to_bytes --------------------------------------------------------------------

def mutated(change):
    spec = SPECS["valid_or_vmem"]()
    change(spec)
    return spec


@pytest.mark.parametrize("change, words", [
    (lambda s: setattr(s.layers[1].neuron, "tau_fire", float("nan")), "layer 1 'conv1': tau_fire nan"),
    (lambda s: setattr(s.layers[3].neuron, "tau_integ", 0.0), "layer 3 'conv2': tau_integ 0.0"),
    (lambda s: setattr(s.layers[1].neuron, "vth0", -1.0), "layer 1 'conv1': vth0"),
    (lambda s: setattr(s.layers[5].neuron, "td_fire", float("inf")), "layer 5 'fc1': td_fire"),
    (lambda s: setattr(s.layers[0], "input_divisor", 0.0), "layer 0 'input': input_divisor"),
    (lambda s: setattr(s.layers[1].neuron, "fire_window", (80, 401)), "layer 1 'conv1': fire_window"),
    (lambda s: setattr(s.layers[1].neuron, "integ_window", (5, 4)), "layer 1 'conv1': integ_window"),
    (lambda s: setattr(s.layers[2], "out_shape", (3, 3, 5)), "layer 2 'pool1': out_shape"),
    (lambda s: setattr(s.layers[3], "depth", 3), "layer 3 'conv2': depth 3, expected 2"),
    (lambda s: s.layers[5].weights.__setitem__((0, 0), np.inf), "layer 5 'fc1': weights"),
    (lambda s: setattr(s.layers[5], "bias", np.zeros(4, np.float32)), "layer 5 'fc1': bias shape"),
    (lambda s: setattr(s.layers[1], "name", "x" * 32), "layer 1 'x+': name"),
    (lambda s: setattr(s.layers[1], "name", ""), "layer 1 '': name"),
    (lambda s: setattr(s.layers[2], "pool_mode", "average"), "layer 2 'pool1': pool_mode"),
    (lambda s: setattr(s.layers[4], "kernel", (1, 1)), "layer 4 'flat': kernel"),
    (lambda s: setattr(s, "readout", "softmax"), "readout 'softmax'"),
    (lambda s: setattr(s, "time_steps", 0), "time_steps 0"),
    (lambda s: setattr(s, "metadata", "a\0b"), "metadata contains a NUL"),
    (lambda s: s.layers.insert(2, input_layer((6, 6, 4), name="again")), "layer 2 'again'"),
])
def test_to_bytes_rejects_what_the_reader_rejects(change, words):
    spec = mutated(change)
    with pytest.raises(ValueError, match=words):
        to_bytes(spec)


def test_to_bytes_limits_the_sum_of_all_windows():
    steps = CONST["TTFS_FMT_MAX_TIME_STEPS"]  # 2^20; 16 windows of 2^20 steps reach 2^24 exactly
    layers = [input_layer((1, 1, 1))] + [conv2d(f"c{i}", np.ones((1, 1, 1, 1))) for i in range(1, 9)]
    spec = build_model(layers, time_steps=steps)
    for layer in spec.layers:
        layer.neuron.fire_window = (0, steps)
        if layer.kind != "input":
            layer.neuron.integ_window = (0, steps)
    spec.layers[0].neuron.fire_window = (0, 0)  # 16 x 2^20 = 2^24: at the limit
    to_bytes(spec)
    spec.layers[0].neuron.fire_window = (0, 1)  # one step more
    with pytest.raises(ValueError, match="windows of all layers add up to 16777217 steps"):
        to_bytes(spec)


def test_check_false_writes_what_it_is_given():
    spec = mutated(lambda s: setattr(s.layers[1].neuron, "tau_fire", float("nan")))
    data = to_bytes(spec, check=False)
    assert math.isnan(struct.unpack_from("<f", data, 128 + 128 + 84)[0])
    spec = mutated(lambda s: setattr(s.layers[1], "kind", 77))  # an unknown kind code
    assert struct.unpack_from("<I", to_bytes(spec, check=False), 128 + 128 + 32)[0] == 77


# ---- reading back ------------------------------------------------------------------------------

def test_from_bytes_checks_magic_version_and_crc():
    data = to_bytes(SPECS["dense_only"]())
    with pytest.raises(ValueError, match="magic"):
        from_bytes(b"NOTTTFS\0" + data[8:])
    with pytest.raises(ValueError, match="format_version 2"):
        from_bytes(with_crc(data[:8] + struct.pack("<I", 2) + data[12:]))
    flipped = bytearray(data)
    flipped[200] ^= 0x01
    with pytest.raises(ValueError, match="crc32"):
        from_bytes(bytes(flipped))
    assert from_bytes(with_crc(bytes(flipped))).layers[0].name == "input"  # CRC refreshed
    with pytest.raises(ValueError, match="shorter"):
        from_bytes(data[:100])


def test_with_crc_recomputes_only_the_last_four_bytes():
    data = to_bytes(SPECS["dense_only"]())
    broken = data[:-4] + b"\xde\xad\xbe\xef"
    assert with_crc(broken) == data
    assert with_crc(data) == data


# ---- no TensorFlow at import -------------------------------------------------------------------

def test_import_does_not_pull_tensorflow(tmp_path):
    # A stand-in tensorflow package on the path: if the writer imported TensorFlow it would find
    # this one and it would show in sys.modules (real TensorFlow need not be installed).
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("")
    code = ("import sys, export, export.ttfs_format; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
