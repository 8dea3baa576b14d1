"""The committed corrupt-file suite (tests/corrupt/): one file per rejection reason.

Each file must be rejected, from a path and from memory, with exactly the status that
expected.json names (written by hand in make_corrupt.py from docs/FORMAT.md) and a message that
contains the offending field's name.
"""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import from_bytes, to_bytes

CORRUPT = Path(__file__).resolve().parent / "corrupt"
EXPECTED = json.loads((CORRUPT / "expected.json").read_text(encoding="utf-8"))


def load_make_corrupt():
    spec = importlib.util.spec_from_file_location("make_corrupt", CORRUPT / "make_corrupt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corrupt_file_is_rejected_from_path(name):
    expected = EXPECTED[name]
    with pytest.raises(pyttfs.TtfsError) as caught:
        pyttfs.Model(CORRUPT / name)
    error = caught.value
    assert error.status == expected["status"], error.message
    assert error.code == pyttfs.Status[expected["status"].removeprefix("TTFS_")]
    assert expected["word"] in error.message, error.message
    assert name in error.message  # a path load names the file


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corrupt_file_is_rejected_from_memory(name):
    expected = EXPECTED[name]
    with pytest.raises(pyttfs.TtfsError) as caught:
        pyttfs.Model.from_bytes((CORRUPT / name).read_bytes())
    assert caught.value.status == expected["status"], caught.value.message
    assert expected["word"] in caught.value.message, caught.value.message


def test_valid_file_loads_and_runs():
    with pyttfs.Model(CORRUPT / "valid.ttfs") as model:
        assert [layer.name for layer in model.layers] == ["input", "conv1", "pool1", "flatten", "fc1"]
        assert [layer.shape for layer in model.layers] == [(6, 6, 1), (4, 4, 2), (2, 2, 2), (1, 1, 8), (1, 1, 3)]
        assert tuple(model.input_shape) == (6, 6, 1) and model.num_classes == 3
        assert model.time_steps == 400 and model.readout == "vmem" and model.input_divisor == 255.0
        assert model.metadata == {"purpose": "ttfs corrupt-file suite"}
        with model.session(backend="cpu", engine="stepped", max_batch=1) as session:
            result = session.run(np.zeros((1, 6, 6, 1), np.uint8))
    # Worked by hand for a zero image: no input spikes; conv1 channel 0 holds its bias 0.125,
    # which first reaches exp(-j/20) at j = 42 (exp(-41/20) = 0.1287), so every channel-0
    # unit fires at step 80 + 42 and the pooled spikes reach flatten positions 0, 2, 4, 6.
    # fc1 integrates them at step 122 with kernel exp(-42/20); channel 1 (bias -0.25) is silent.
    fc_weights = (((np.arange(24, dtype=np.float32) * 5 % 13) - 6) / 16).reshape(8, 3)
    synaptic_sum = fc_weights[0] + fc_weights[2] + fc_weights[4] + fc_weights[6]
    expected = np.float32([0.5, 0.0, -0.5]) + synaptic_sum * np.exp(np.float32(-42 / 20))
    np.testing.assert_allclose(result.potentials[0], expected, rtol=1e-6)
    assert list(result.predictions) == [0]


# Defects in bytes that a ModelSpec has no field for (fixed header fields, reserved bytes,
# padding, layout, fields of kinds that do not use them): reading such a file back into a spec
# drops them, and the spec writes a valid file again.
NOT_REPRESENTABLE = {"bad_header_size.ttfs", "bad_layer_record_size.ttfs", "nonzero_flags.ttfs",
                     "nonzero_reserved_header.ttfs", "misaligned_tensor_offset.ttfs", "nonzero_padding.ttfs",
                     "name_padding_nonzero.ttfs", "name_not_utf8.ttfs", "nonzero_reserved_layer.ttfs",
                     "tensor_reserved_nonzero.ttfs", "bad_dtype.ttfs", "unused_dim_nonzero.ttfs",
                     "tensor_unreferenced.ttfs", "unused_neuron_field_nonzero.ttfs"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_writer_refuses_what_the_reader_refuses(name):
    """export.ttfs_format validates what the C reader validates: a rejected file read back into
    a spec cannot be written again with check=True."""
    try:
        spec = from_bytes((CORRUPT / name).read_bytes())
    except ValueError:
        return  # already refused while parsing (magic, version, CRC, sizes, offsets)
    if name in NOT_REPRESENTABLE:
        pyttfs.Model.from_bytes(to_bytes(spec)).close()
        return
    with pytest.raises(ValueError):
        to_bytes(spec)


def test_windows_at_the_limit_load():
    # The windows_over_limit case one step lower: 16 windows of 2^20 steps = 2^24 exactly.
    make_corrupt = load_make_corrupt()
    data = make_corrupt.long_windows_bytes()
    spec = from_bytes(data)
    spec.layers[0].neuron.fire_window = (0, 0)
    with pyttfs.Model.from_bytes(to_bytes(spec)) as model:
        assert model.layers[1].fire_window == (0, 2 ** 20)
    spec.layers[0].neuron.fire_window = (0, 1)
    with pytest.raises(pyttfs.TtfsError) as caught:
        pyttfs.Model.from_bytes(to_bytes(spec, check=False))
    assert caught.value.status == "TTFS_ERR_BAD_FIELD" and "16777217 steps" in caught.value.message


def test_committed_files_match_the_generator():
    make_corrupt = load_make_corrupt()
    valid, files = make_corrupt.generate()
    assert (CORRUPT / "valid.ttfs").read_bytes() == valid, "rerun python tests/corrupt/make_corrupt.py"
    committed = {path.name for path in CORRUPT.glob("*.ttfs")} - {"valid.ttfs"}
    assert committed == set(files), "rerun python tests/corrupt/make_corrupt.py"
    for name, (data, _) in files.items():
        assert (CORRUPT / name).read_bytes() == data, f"{name} differs from what make_corrupt.py writes"
    assert (CORRUPT / "expected.json").read_text(encoding="utf-8") == make_corrupt.expected_json(files)


def test_every_file_rejection_status_has_a_case():
    # The model-file rejections of include/ttfs.h, read from the header itself.
    header = (CORRUPT.parent.parent / "include" / "ttfs.h").read_text()
    file_statuses = set(re.findall(r"(TTFS_ERR_\w+) = 1[01]\d\b", header))
    assert len(file_statuses) == 12
    missing = file_statuses - {e["status"] for e in EXPECTED.values()}
    assert not missing, f"no corrupt file for {sorted(missing)}"


def test_suite_covers_the_required_reasons():
    required = ["bad_magic", "future_version", "truncated_header", "truncated_tensor_data",
                "overflowing_dims", "shape_chain_mismatch", "nan_tau", "bad_crc", "trailing_bytes",
                "unknown_layer_type", "offset_out_of_range", "misaligned_tensor_offset",
                "non_positive_tau", "inf_weight", "bad_readout", "unterminated_name",
                "window_outside_time_steps", "nonzero_reserved_header"]
    assert [name for name in required if f"{name}.ttfs" not in EXPECTED] == []
