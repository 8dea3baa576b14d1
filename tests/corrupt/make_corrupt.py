"""Build the corrupt-file suite: one small valid model and one broken copy per rejection reason.

    python tests/corrupt/make_corrupt.py        # (re)writes tests/corrupt/*.ttfs and expected.json

valid.ttfs is written by export/ttfs_format.py. Each <case>.ttfs changes one thing in it; every
mutation except the ones aimed at the size and CRC checks recomputes the CRC, so the file gets
past the CRC and reaches the check it targets. expected.json records, per file, the status the
reader must return and a word its message must contain (the field's name). Those expectations
are written here by hand from docs/FORMAT.md, never recorded from the reader's output.

Layout of valid.ttfs (5 layers, 4 tensors):
    layer 0 'input'  (6, 6, 1)            tensor 0 conv1 weights [3, 3, 1, 2]
    layer 1 'conv1'  3x3 VALID (4, 4, 2)  tensor 1 conv1 bias    [2]
    layer 2 'pool1'  2x2 or    (2, 2, 2)  tensor 2 fc1 weights   [8, 3]
    layer 3 'flatten'          (1, 1, 8)  tensor 3 fc1 bias      [3]
    layer 4 'fc1'    dense     (1, 1, 3)
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from export.ttfs_format import (CONST, build_model, conv2d, dense, flatten, input_layer,  # noqa: E402
                                maxpool, to_bytes, with_crc)

C = CONST


def valid_model_bytes() -> bytes:
    # Weights from integer arithmetic, not a random generator, so the bytes never depend on
    # the numpy version.
    conv_w = ((np.arange(18, dtype=np.float32) * 7 % 11) - 5) / 8
    fc_w = ((np.arange(24, dtype=np.float32) * 5 % 13) - 6) / 16
    layers = [input_layer((6, 6, 1)),
              conv2d("conv1", conv_w.reshape(3, 3, 1, 2), np.array([0.125, -0.25], np.float32)),
              maxpool("pool1", (2, 2), mode="or"),
              flatten(),
              dense("fc1", fc_w.reshape(8, 3), np.array([0.5, 0.0, -0.5], np.float32))]
    spec = build_model(layers, time_steps=400, metadata={"purpose": "ttfs corrupt-file suite"})
    return to_bytes(spec)


def long_windows_bytes() -> bytes:
    """input + 8 conv 1x1 layers, every window [0, 2^20): each layer is valid on its own, but
    all windows together exceed TTFS_FMT_MAX_WINDOW_STEPS. Written unchecked (the writer
    refuses it too)."""
    steps = C["TTFS_FMT_MAX_TIME_STEPS"]
    layers = [input_layer((1, 1, 1))] + [conv2d(f"conv{i}", np.ones((1, 1, 1, 1), np.float32))
                                         for i in range(1, 9)]
    spec = build_model(layers, time_steps=steps)
    for layer in spec.layers:
        layer.neuron.fire_window = (0, steps)
        if layer.kind != "input":
            layer.neuron.integ_window = (0, steps)
    return to_bytes(spec, check=False)


class File:
    """Offsets of valid.ttfs, read from its own header, and typed in-place mutations."""

    def __init__(self, data: bytes):
        self.data = bytearray(data)
        self.layer_table = self.u64(C["TTFS_FMT_H_LAYER_TABLE_OFFSET"])
        self.tensor_table = self.u64(C["TTFS_FMT_H_TENSOR_TABLE_OFFSET"])
        self.metadata_offset = self.u64(C["TTFS_FMT_H_METADATA_OFFSET"])
        self.metadata_size = self.u64(C["TTFS_FMT_H_METADATA_SIZE"])

    def u64(self, offset):
        return struct.unpack_from("<Q", self.data, offset)[0]

    def put(self, fmt, offset, *values):
        struct.pack_into("<" + fmt, self.data, offset, *values)
        return self

    def layer(self, index, field):
        return self.layer_table + index * C["TTFS_FMT_LAYER_RECORD_SIZE"] + C["TTFS_FMT_L_" + field]

    def tensor(self, index, field):
        return self.tensor_table + index * C["TTFS_FMT_TENSOR_RECORD_SIZE"] + C["TTFS_FMT_T_" + field]

    def tensor_data(self, index):
        return self.u64(self.tensor(index, "DATA_OFFSET"))

    def fixed(self) -> bytes:
        return with_crc(bytes(self.data))

    def raw(self) -> bytes:
        return bytes(self.data)


def cases(valid: bytes):
    """name -> (bytes, status name, word the message must contain, what is wrong)."""
    f = lambda: File(valid)  # noqa: E731  a fresh copy per case
    size = len(valid)
    out = {}

    def case(name, data, status, word, why):
        assert name not in out, name
        out[name] = (data, status, word, why)

    # -- header, sizes, CRC (in the reader's order) --
    case("truncated_header", valid[:100], "TTFS_ERR_TRUNCATED_HEADER", "header",
         "100 bytes, shorter than the 128-byte header")
    case("empty_file", b"", "TTFS_ERR_TRUNCATED_HEADER", "header", "zero bytes")
    bad_magic = f()
    bad_magic.data[0:8] = b"TTFSNEX\0"
    case("bad_magic", bad_magic.fixed(), "TTFS_ERR_BAD_MAGIC", "magic", "magic TTFSNEX")
    case("future_version", f().put("I", C["TTFS_FMT_H_VERSION"], 2).fixed(), "TTFS_ERR_UNSUPPORTED_VERSION",
         "newer", "format_version 2")
    case("version_zero", f().put("I", C["TTFS_FMT_H_VERSION"], 0).fixed(), "TTFS_ERR_UNSUPPORTED_VERSION",
         "format_version", "format_version 0")
    case("bad_header_size", f().put("I", C["TTFS_FMT_H_HEADER_SIZE"], 64).fixed(), "TTFS_ERR_BAD_FIELD",
         "header_size", "header_size 64")
    case("bad_layer_record_size", f().put("I", C["TTFS_FMT_H_LAYER_RECORD_SIZE"], 96).fixed(),
         "TTFS_ERR_BAD_FIELD", "layer_record_size", "layer_record_size 96")
    case("nonzero_flags", f().put("I", C["TTFS_FMT_H_FLAGS"], 1).fixed(), "TTFS_ERR_BAD_FIELD", "flags",
         "flags 1")
    case("nonzero_reserved_header", f().put("B", C["TTFS_FMT_H_RESERVED"] + 20, 0x5A).fixed(),
         "TTFS_ERR_BAD_FIELD", "reserved", "a reserved header byte is 0x5a")
    case("truncated_tensor_data", valid[:size - 20], "TTFS_ERR_TRUNCATED_DATA", "file_size",
         "the last tensor is cut short (and the CRC lost)")
    case("trailing_bytes", valid + bytes(16), "TTFS_ERR_TRAILING_BYTES", "trailing",
         "16 zero bytes after the CRC")
    bad_crc = f()
    bad_crc.data[bad_crc.tensor_data(2) + 1] ^= 0x10  # one bit of fc1's weights, CRC left stale
    case("bad_crc", bad_crc.raw(), "TTFS_ERR_BAD_CRC", "crc32", "one flipped bit, stale CRC")
    case("too_many_layers", f().put("I", C["TTFS_FMT_H_LAYER_COUNT"], C["TTFS_FMT_MAX_LAYERS"] + 1).fixed(),
         "TTFS_ERR_BAD_FIELD", "layer_count", "layer_count over the limit")
    case("single_layer", f().put("I", C["TTFS_FMT_H_LAYER_COUNT"], 1).fixed(), "TTFS_ERR_BAD_FIELD",
         "layer_count", "layer_count 1: no layer after the input")
    case("too_many_tensors", f().put("I", C["TTFS_FMT_H_TENSOR_COUNT"], C["TTFS_FMT_MAX_TENSORS"] + 1).fixed(),
         "TTFS_ERR_BAD_FIELD", "tensor_count", "tensor_count over the limit")

    # -- regions --
    case("layer_table_offset_wrong", f().put("Q", C["TTFS_FMT_H_LAYER_TABLE_OFFSET"], 192).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "layer_table_offset", "layer table not right after the header")
    case("layer_table_past_end", f().put("I", C["TTFS_FMT_H_LAYER_COUNT"], 1000).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "layer table", "1000 layer records do not fit in the file")
    case("metadata_offset_wrong", f().put("Q", C["TTFS_FMT_H_METADATA_OFFSET"], f().metadata_offset + 8).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "metadata_offset", "a hole before the metadata")
    case("metadata_past_end", f().put("Q", C["TTFS_FMT_H_METADATA_SIZE"], 1_000_000).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "metadata_size", "metadata runs past the end of the file")
    g = f()
    case("offset_out_of_range", g.put("Q", g.tensor(3, "DATA_OFFSET"), 1 << 40).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "data_offset", "tensor 3 data_offset 2^40")
    g = f()
    case("data_size_past_end", g.put("Q", g.tensor(3, "DATA_SIZE"), 0xFFFFFFFFFFFFFFF0).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "data_size", "offset + size wraps around 2^64")
    g = f()
    case("misaligned_tensor_offset", g.put("Q", g.tensor(1, "DATA_OFFSET"), g.tensor_data(1) + 4).fixed(),
         "TTFS_ERR_OFFSET_OUT_OF_RANGE", "multiple of 64", "tensor 1 data_offset not 64-aligned")
    g = f()
    g.data[g.tensor_data(1) - 3] = 0xAB  # inside the padding after conv1's 72 weight bytes
    case("nonzero_padding", g.fixed(), "TTFS_ERR_OFFSET_OUT_OF_RANGE", "padding", "a padding byte is 0xab")
    g = f()
    # Grow tensor 2 from [8, 3] to [11, 3] (132 bytes): its data now runs into tensor 3's.
    g.put("Q", g.tensor(2, "DIMS"), 11).put("Q", g.tensor(2, "DATA_SIZE"), 4 * 33)
    case("tensors_overlap", g.fixed(), "TTFS_ERR_OFFSET_OUT_OF_RANGE", "data_offset",
         "tensor 3 starts inside tensor 2")

    # -- sizes --
    g = f()
    g.put("4Q", g.tensor(0, "DIMS"), 1 << 32, 1 << 32, 1 << 32, 1 << 32)
    case("overflowing_dims", g.fixed(), "TTFS_ERR_DIM_OVERFLOW", "dims", "dims multiply past 2^64")
    g = f()
    g.put("4Q", g.tensor(0, "DIMS"), 1 << 15, 1 << 15, 1, 2)
    case("tensor_over_limit", g.fixed(), "TTFS_ERR_DIM_OVERFLOW", "limit", "2^31 elements, over 2^28")
    case("layer_extent_over_limit", f().put("I", f().layer(1, "OUT_H"), C["TTFS_FMT_MAX_EXTENT"] + 1).fixed(),
         "TTFS_ERR_DIM_OVERFLOW", "out_h", "out_h 2^20 + 1")
    g = f()
    g.put("III", g.layer(0, "OUT_H"), 1 << 20, 1 << 20, 1)
    case("layer_size_over_limit", g.fixed(), "TTFS_ERR_DIM_OVERFLOW", "neurons", "input 2^20 x 2^20")

    # -- kinds --
    case("unknown_layer_type", f().put("I", f().layer(2, "KIND"), 9).fixed(), "TTFS_ERR_UNKNOWN_LAYER_TYPE",
         "kind", "layer 2 kind 9")
    case("layer_type_zero", f().put("I", f().layer(3, "KIND"), 0).fixed(), "TTFS_ERR_UNKNOWN_LAYER_TYPE",
         "kind", "layer 3 kind 0")

    # -- fields --
    case("bad_readout", f().put("I", C["TTFS_FMT_H_READOUT"], 2).fixed(), "TTFS_ERR_BAD_FIELD", "readout",
         "readout 2")
    case("zero_time_steps", f().put("I", C["TTFS_FMT_H_TIME_STEPS"], 0).fixed(), "TTFS_ERR_BAD_FIELD",
         "time_steps", "time_steps 0")
    case("too_many_time_steps", f().put("I", C["TTFS_FMT_H_TIME_STEPS"], C["TTFS_FMT_MAX_TIME_STEPS"] + 1).fixed(),
         "TTFS_ERR_BAD_FIELD", "time_steps", "time_steps over the limit")
    g = f()
    g.data[g.metadata_offset + 3] = 0
    case("metadata_nul", g.fixed(), "TTFS_ERR_BAD_FIELD", "metadata", "a NUL byte inside the metadata")
    g = f()
    g.data[g.metadata_offset + 3] = 0xC3  # a UTF-8 lead byte followed by ASCII
    case("metadata_not_utf8", g.fixed(), "TTFS_ERR_BAD_FIELD", "UTF-8", "metadata is not UTF-8")
    case("bad_dtype", f().put("I", f().tensor(1, "DTYPE"), 2).fixed(), "TTFS_ERR_BAD_FIELD", "dtype",
         "tensor 1 dtype 2")
    case("bad_ndim", f().put("I", f().tensor(1, "NDIM"), 5).fixed(), "TTFS_ERR_BAD_FIELD", "ndim",
         "tensor 1 ndim 5")
    case("unused_dim_nonzero", f().put("Q", f().tensor(1, "DIMS") + 8, 1).fixed(), "TTFS_ERR_BAD_FIELD",
         "dims[1]", "tensor 1 (ndim 1) has dims[1] = 1")
    # 76 bytes still end inside tensor 0's zero padding, so only the dims disagree.
    case("data_size_mismatch", f().put("Q", f().tensor(0, "DATA_SIZE"), 76).fixed(), "TTFS_ERR_BAD_FIELD",
         "data_size", "tensor 0 data_size 76 for 18 elements")
    case("tensor_reserved_nonzero", f().put("Q", f().tensor(2, "RESERVED"), 7).fixed(), "TTFS_ERR_BAD_FIELD",
         "reserved", "tensor 2 reserved 7")
    g = f()
    g.data[g.layer(1, "NAME"):g.layer(1, "NAME") + C["TTFS_FMT_NAME_SIZE"]] = b"c" * C["TTFS_FMT_NAME_SIZE"]
    case("unterminated_name", g.fixed(), "TTFS_ERR_BAD_FIELD", "NUL-terminated", "32 name bytes, no NUL")
    g = f()
    g.data[g.layer(2, "NAME"):g.layer(2, "NAME") + 5] = bytes(5)
    case("empty_name", g.fixed(), "TTFS_ERR_BAD_FIELD", "name", "layer 2 name empty")
    g = f()
    g.data[g.layer(4, "NAME") + 10] = ord("x")
    case("name_padding_nonzero", g.fixed(), "TTFS_ERR_BAD_FIELD", "name", "a byte after the name's NUL")
    g = f()
    g.data[g.layer(4, "NAME") + 1] = 0xFF
    case("name_not_utf8", g.fixed(), "TTFS_ERR_BAD_FIELD", "UTF-8", "name bytes f\\xff1")
    case("bad_depth", f().put("i", f().layer(4, "DEPTH"), 5).fixed(), "TTFS_ERR_BAD_FIELD", "depth",
         "fc1 depth 5, expected 2")
    case("pool_depth_not_minus_one", f().put("i", f().layer(2, "DEPTH"), 2).fixed(), "TTFS_ERR_BAD_FIELD",
         "depth", "maxpool depth 2, expected -1")
    # 0 or, 1 earliest, 2 gated: 3 is the first value no version of the format gives a meaning
    case("bad_pool_mode", f().put("I", f().layer(2, "POOL_MODE"), 3).fixed(), "TTFS_ERR_BAD_FIELD",
         "pool_mode", "pool_mode 3")
    case("bad_padding", f().put("I", f().layer(1, "PADDING"), 2).fixed(), "TTFS_ERR_BAD_FIELD", "padding",
         "conv1 padding 2")
    case("zero_stride", f().put("I", f().layer(2, "STRIDE_W"), 0).fixed(), "TTFS_ERR_BAD_FIELD", "stride",
         "pool1 stride_w 0")
    case("unused_field_nonzero", f().put("I", f().layer(3, "KERNEL_H"), 1).fixed(), "TTFS_ERR_BAD_FIELD",
         "kernel_h", "flatten kernel_h 1")
    case("unused_neuron_field_nonzero", f().put("f", f().layer(2, "TAU_FIRE"), 20.0).fixed(),
         "TTFS_ERR_BAD_FIELD", "tau_fire", "maxpool tau_fire 20")
    case("divisor_on_hidden_layer", f().put("f", f().layer(1, "INPUT_DIVISOR"), 255.0).fixed(),
         "TTFS_ERR_BAD_FIELD", "input_divisor", "conv1 input_divisor 255")
    case("nonzero_reserved_layer", f().put("I", f().layer(4, "RESERVED"), 1).fixed(), "TTFS_ERR_BAD_FIELD",
         "reserved", "fc1 reserved 1")
    case("tensor_index_out_of_range", f().put("i", f().layer(4, "WEIGHT_TENSOR"), 4).fixed(),
         "TTFS_ERR_BAD_FIELD", "weight_tensor", "fc1 weight_tensor 4 of 4 tensors")
    case("missing_weight_tensor", f().put("i", f().layer(1, "WEIGHT_TENSOR"), -1).fixed(),
         "TTFS_ERR_BAD_FIELD", "weight_tensor", "conv1 weight_tensor -1")
    case("tensor_used_twice", f().put("i", f().layer(4, "BIAS_TENSOR"), 1).fixed(), "TTFS_ERR_BAD_FIELD",
         "bias_tensor", "fc1 bias_tensor 1 is conv1's bias")
    case("tensor_unreferenced", f().put("i", f().layer(4, "BIAS_TENSOR"), -1).fixed(), "TTFS_ERR_BAD_FIELD",
         "not referenced", "tensor 3 belongs to no layer")
    case("window_outside_time_steps", f().put("i", f().layer(1, "FIRE_END"), 401).fixed(), "TTFS_ERR_BAD_FIELD",
         "fire_end", "conv1 fire_end 401 > time_steps 400")
    case("negative_window_start", f().put("i", f().layer(4, "INTEG_START"), -1).fixed(), "TTFS_ERR_BAD_FIELD",
         "integ_start", "fc1 integ_start -1")
    case("window_reversed", f().put("ii", f().layer(1, "FIRE_START"), 150, 100).fixed(), "TTFS_ERR_BAD_FIELD",
         "fire_start", "conv1 fire window [150, 100)")
    case("input_integrates", f().put("ii", f().layer(0, "INTEG_START"), 0, 10).fixed(), "TTFS_ERR_BAD_FIELD",
         "integ_end", "input integ window [0, 10)")

    case("windows_over_limit", long_windows_bytes(), "TTFS_ERR_BAD_FIELD", "windows",
         "9 neuron layers whose windows each span all 2^20 steps: 17 x 2^20 > 2^24 in total")

    # -- shapes --
    case("shape_chain_mismatch", f().put("I", f().layer(2, "OUT_H"), 3).fixed(), "TTFS_ERR_SHAPE_CHAIN",
         "out_h", "pool1 says 3x2x2, the chain gives 2x2x2")
    g = f()
    g.put("4Q", g.tensor(0, "DIMS"), 3, 3, 2, 1)  # same element count, wrong in_c/out_c
    case("weight_shape_mismatch", g.fixed(), "TTFS_ERR_SHAPE_CHAIN", "weight_tensor",
         "conv1 weights [3, 3, 2, 1], expected [3, 3, 1, 2]")
    g = f()
    g.put("4Q", g.tensor(2, "DIMS"), 3, 8, 0, 0)
    case("dense_weights_transposed", g.fixed(), "TTFS_ERR_SHAPE_CHAIN", "weight_tensor",
         "fc1 weights [3, 8], expected [8, 3]")
    g = f()
    g.put("III", g.layer(1, "KERNEL_H"), 7, 3, 1)  # conv1 kernel_h 7 > 6 input rows under VALID
    case("kernel_larger_than_input", g.fixed(), "TTFS_ERR_SHAPE_CHAIN", "kernel_h", "7x3 kernel on 6x6")
    case("flatten_output_wrong", f().put("I", f().layer(3, "OUT_C"), 9).fixed(), "TTFS_ERR_SHAPE_CHAIN", "out_c",
         "flatten says 9, the chain gives 8")
    case("second_input_layer", f().put("I", f().layer(3, "KIND"), C["TTFS_FMT_LAYER_INPUT"]).put(
        "i", f().layer(3, "DEPTH"), 2).put("i", f().layer(4, "DEPTH"), 3).put(
        "ii", f().layer(3, "FIRE_START"), 0, 80).put("f", f().layer(3, "TAU_FIRE"), 20.0).put(
        "f", f().layer(3, "VTH0"), 1.0).put("f", f().layer(3, "INPUT_DIVISOR"), 1.0).fixed(),
        "TTFS_ERR_SHAPE_CHAIN", "input", "layer 3 turned into a second input layer")

    # -- values --
    case("nan_tau", f().put("I", f().layer(1, "TAU_FIRE"), 0x7FC00000).fixed(), "TTFS_ERR_BAD_VALUE", "tau_fire",
         "conv1 tau_fire NaN")
    case("non_positive_tau", f().put("f", f().layer(4, "TAU_INTEG"), -20.0).fixed(), "TTFS_ERR_BAD_VALUE",
         "tau_integ", "fc1 tau_integ -20")
    case("zero_tau_fire_input", f().put("f", f().layer(0, "TAU_FIRE"), 0.0).fixed(), "TTFS_ERR_BAD_VALUE",
         "tau_fire", "input tau_fire 0")
    case("inf_td", f().put("I", f().layer(1, "TD_FIRE"), 0xFF800000).fixed(), "TTFS_ERR_BAD_VALUE", "td_fire",
         "conv1 td_fire -Inf")
    case("zero_vth0", f().put("f", f().layer(1, "VTH0"), 0.0).fixed(), "TTFS_ERR_BAD_VALUE", "vth0",
         "conv1 vth0 0")
    case("zero_input_divisor", f().put("f", f().layer(0, "INPUT_DIVISOR"), 0.0).fixed(), "TTFS_ERR_BAD_VALUE",
         "input_divisor", "input_divisor 0")
    # -- derived values: finite constants whose consequences overflow float32 --
    case("threshold_overflows", f().put("f", f().layer(1, "TD_FIRE"), 1e30).fixed(), "TTFS_ERR_BAD_VALUE",
         "td_fire", "conv1 td_fire 1e30: vth0 * exp((1e30 - j) / tau_fire) is +Inf")
    case("kernel_overflows", f().put("f", f().layer(4, "TD_INTEG"), 3.4028234663852886e38).fixed(),
         "TTFS_ERR_BAD_VALUE", "td_integ", "fc1 td_integ FLT_MAX: exp((FLT_MAX - i) / tau_integ) is +Inf")
    case("scaled_pixel_overflows", f().put("I", f().layer(0, "INPUT_DIVISOR"), 0x00000001).fixed(),
         "TTFS_ERR_BAD_VALUE", "input_divisor", "input_divisor 1.4e-45: 255 / input_divisor is +Inf")
    g = f()
    # Every fc1 weight 2e37: 8 inputs, each up to 4 spikes (the `or` pool of 2x2 conv1 units),
    # kernel at most exp(0) = 1: potentials up to 6.4e38 > FLT_MAX (3.4e38).
    for k in range(24):
        g.put("f", g.tensor_data(2) + 4 * k, 2e37)
    case("potential_overflows", g.fixed(), "TTFS_ERR_BAD_VALUE", "potentials",
         "fc1 weights 2e37: 8 inputs x 4 spikes add up past FLT_MAX")
    g = f()
    case("inf_weight", g.put("I", g.tensor_data(2) + 4 * 5, 0x7F800000).fixed(), "TTFS_ERR_BAD_VALUE",
         "tensor 2", "fc1 weight element 5 is +Inf")
    g = f()
    case("nan_bias", g.put("I", g.tensor_data(1) + 4, 0x7FC00001).fixed(), "TTFS_ERR_BAD_VALUE", "tensor 1",
         "conv1 bias element 1 is NaN")
    return out


def generate():
    """(valid bytes, {file name: (bytes, expectation dict)})."""
    valid = valid_model_bytes()
    files = {}
    for name, (data, status, word, why) in cases(valid).items():
        files[f"{name}.ttfs"] = (data, {"status": status, "word": word, "why": why})
    return valid, files


def expected_json(files) -> str:
    return json.dumps({name: expectation for name, (_, expectation) in sorted(files.items())},
                      indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    valid, files = generate()
    for old in HERE.glob("*.ttfs"):
        old.unlink()
    (HERE / "valid.ttfs").write_bytes(valid)
    for name, (data, _) in files.items():
        (HERE / name).write_bytes(data)
    (HERE / "expected.json").write_text(expected_json(files), encoding="utf-8")
    print(f"wrote valid.ttfs and {len(files)} corrupt files to {HERE}")


if __name__ == "__main__":
    main()
