"""`python -m pyttfs diff MODEL GOLDEN`: libttfs against a golden dump, layer by layer.

On the committed goldens (tests/golden/) it agrees and exits 0. On tampered copies of a golden
it must name exactly the layer, image and neuron that were altered, say whether that is a
threshold tie (judged from the golden's V and threshold) and exit 1 for a disagreement, 0 for
a tie. Bad input exits 2 with one line on stderr. The expected numbers (neurons compared,
golden spikes) are counted here from the dump itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import pyttfs
except OSError as exc:  # pyttfs.LibraryError: libttfs not built or not found
    pytest.skip(f"libttfs is not available: {exc}", allow_module_level=True)

from pyttfs.__main__ import main

GOLDEN = Path(__file__).resolve().parent / "golden"
ROOT = GOLDEN.parent.parent
OR_MODEL = GOLDEN / "mnist_or_vmem.ttfs"
OR_DUMP = GOLDEN / "mnist_or_vmem.npz"
EARLIEST_MODEL = GOLDEN / "mnist_earliest_first_spike.ttfs"
EARLIEST_DUMP = GOLDEN / "mnist_earliest_first_spike.npz"
ERROR_PREFIX = "python -m pyttfs diff: error: "


def run_diff(capsys, *args):
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def load(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def save(path, arrays):
    np.savez(path, **arrays)
    return path


def layer_table(out):
    """The per-layer table of the text report: layer name -> its numbers."""
    rows = {}
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer ") and
                 "compared" in line)
    for line in lines[start + 1:]:
        fields = line.split()
        if len(fields) != 8:
            break
        rows[fields[0]] = dict(zip(("compared", "golden_spikes", "mismatches", "ties",
                                    "not_ties", "not_compared"), map(int, fields[2:])))
    return rows


def clear_neuron(dump, layer):
    """A neuron that fired, with V clearly between two thresholds (so moving it is no tie)."""
    start = int(dump[f"fire_window/{layer}"][0])
    table = dump[f"thresholds/{layer}"]
    times = dump[f"first_spike_times/{layer}"].astype(np.int64)
    v = dump[f"vmem_at_fire_check/{layer}"]
    clear = (times > start) & (v - table[np.clip(times - start, 0, None)] > 1e-3) & \
        (table[np.clip(times - start - 1, 0, None)] - v > 1e-3)
    candidates = np.argwhere(clear)
    return tuple(int(x) for x in candidates[len(candidates) // 3])


# ---- the committed goldens ----------------------------------------------------------------------

@pytest.mark.parametrize("model, dump", [(OR_MODEL, OR_DUMP), (EARLIEST_MODEL, EARLIEST_DUMP)])
@pytest.mark.parametrize("engine", ["stepped", "analytic"])
def test_committed_golden_agrees(capsys, model, dump, engine):
    code, out, err = run_diff(capsys, model, dump, "--engine", engine)
    assert code == 0, out + err
    assert err == ""
    assert "first-spike times: every neuron of every layer agrees" in out
    assert out.rstrip().splitlines()[-1].startswith("result: agree (0 ties, 0 non-tie")
    arrays = load(dump)
    table = layer_table(out)
    assert list(table) == [str(v) for v in arrays["neuron_layers"]]
    for name, row in table.items():
        times = arrays[f"first_spike_times/{name}"]
        assert row == dict(compared=times.size, golden_spikes=int(np.sum(times >= 0)),
                           mismatches=0, ties=0, not_ties=0, not_compared=0), name
    assert "predictions: 32 of 32 agree" in out
    assert "output potentials: max |libttfs - golden|" in out


def test_json_report(capsys):
    code, out, err = run_diff(capsys, EARLIEST_MODEL, EARLIEST_DUMP, "--json", "--images", "5")
    assert code == 0 and err == ""
    assert len(out.strip().splitlines()) == 1, "--json prints one line"
    report = json.loads(out)
    assert report["exit_code"] == 0 and report["verdict"] == "agree"
    assert report["images"] == 5 and report["engine"] == "stepped" and report["backend"] == "cpu"
    assert report["first_mismatch"] is None and report["mismatches"] == []
    arrays = load(EARLIEST_DUMP)
    for layer in report["layers"]:
        times = arrays[f"first_spike_times/{layer['name']}"][:5]
        assert layer["compared"] == times.size
        assert layer["golden_spikes"] == int(np.sum(times >= 0))
    assert 0 <= report["potential_max_difference"] < 1e-5
    assert report["predictions_agree"] == 5


def test_the_command_line_entry_point():
    # the real `python -m pyttfs`, exit status included
    done = subprocess.run([sys.executable, "-m", "pyttfs", "diff", str(OR_MODEL), str(OR_DUMP),
                           "--images", "3"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: agree" in done.stdout
    done = subprocess.run([sys.executable, "-m", "pyttfs", "info"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("pyttfs "), done.stderr


# ---- tampered goldens ---------------------------------------------------------------------------

def test_an_altered_spike_time_is_reported_exactly(capsys, tmp_path):
    arrays = load(OR_DUMP)
    image, h, w, c = spot = clear_neuron(arrays, "conv2")
    golden_time = int(arrays["first_spike_times/conv2"][spot])
    library_time = golden_time  # the committed golden agrees with libttfs everywhere
    arrays["first_spike_times/conv2"] = arrays["first_spike_times/conv2"].copy()
    arrays["first_spike_times/conv2"][spot] = golden_time + 3
    tampered = save(tmp_path / "tampered.npz", arrays)

    code, out, err = run_diff(capsys, OR_MODEL, tampered)
    assert code == 1, out + err
    assert err == ""
    first = out[out.index("first disagreement:"):]
    assert first.startswith(f"first disagreement: layer conv2 (layer 3), image {image}, neuron "
                            f"(h={h}, w={w}, c={c}): libttfs first spike {library_time}, "
                            f"golden {golden_time + 3}")
    assert "NOT a tie" in first.splitlines()[3]  # after the two golden checks
    table = layer_table(out)
    assert table["conv1"]["mismatches"] == 0
    assert table["conv2"] == dict(compared=32 * 8 * 8 * 64,
                                  golden_spikes=int(np.sum(arrays["first_spike_times/conv2"]
                                                           >= 0)),
                                  mismatches=1, ties=0, not_ties=1, not_compared=0)
    assert table["fc1"]["not_compared"] == 10 and table["fc1"]["compared"] == 31 * 10
    assert out.rstrip().endswith("potential/prediction problems)")
    assert "result: DISAGREE (0 ties, 1 non-tie mismatches" in out

    code, out, _ = run_diff(capsys, OR_MODEL, tampered, "--json", "--engine", "analytic")
    report = json.loads(out)
    assert code == 1 and report["exit_code"] == 1
    assert len(report["mismatches"]) == 1
    mismatch = report["first_non_tie_mismatch"]
    assert (mismatch["layer"], mismatch["image"], tuple(mismatch["neuron"])) == \
        ("conv2", image, (h, w, c))
    assert (mismatch["library_time"], mismatch["golden_time"]) == (library_time,
                                                                    golden_time + 3)
    assert mismatch["tie"] is False and mismatch["step"] == library_time
    # the golden's checks around its (altered) deciding step are shown with their thresholds
    start = int(arrays["fire_window/conv2"][0])
    assert [check["step"] for check in mismatch["checks"]] == [golden_time + 3, golden_time + 2]
    assert mismatch["checks"][0]["threshold"] == pytest.approx(
        float(arrays["thresholds/conv2"][golden_time + 3 - start]), abs=0)


def test_a_tie_is_accepted_and_explains_the_layers_above(capsys, tmp_path):
    # The golden says the neuron fired one step earlier than libttfs, with its V exactly on
    # that step's threshold: the two sides rounded V differently, a tie. Deeper layers of that
    # image would legitimately differ and are not compared.
    arrays = load(OR_DUMP)
    image, h, w, c = spot = clear_neuron(arrays, "conv1")
    library_time = int(arrays["first_spike_times/conv1"][spot])
    start = int(arrays["fire_window/conv1"][0])
    for key in ("first_spike_times/conv1", "vmem_at_fire_check/conv1"):
        arrays[key] = arrays[key].copy()
    arrays["first_spike_times/conv1"][spot] = library_time - 1
    arrays["vmem_at_fire_check/conv1"][spot] = arrays["thresholds/conv1"][library_time - 1 - start]
    tampered = save(tmp_path / "tie.npz", arrays)

    code, out, err = run_diff(capsys, OR_MODEL, tampered)
    assert code == 0, out + err
    assert f"first disagreement: layer conv1 (layer 1), image {image}, neuron (h={h}, w={w}, " \
           f"c={c}): libttfs first spike {library_time}, golden {library_time - 1}" in out
    assert "a threshold tie: golden |V - vth| at step" in out
    table = layer_table(out)
    assert table["conv1"]["ties"] == 1 and table["conv1"]["not_ties"] == 0
    assert table["conv2"]["not_compared"] == 8 * 8 * 64
    assert table["fc1"]["not_compared"] == 10
    assert "result: agree up to threshold ties (1 ties, 0 non-tie" in out

    # the bound the report used is the manifest's 2 u ((N + 10) A + 8 |vth|) ...
    report = json.loads(run_diff(capsys, OR_MODEL, tampered, "--json")[1])
    vth = float(arrays["thresholds/conv1"][library_time - 1 - start])
    bound = 2 * 2.0 ** -24 * ((float(arrays["terms/conv1"][spot]) + 10)
                              * float(arrays["magnitude/conv1"][spot]) + 8 * vth)
    assert report["mismatches"][0]["bound"] == pytest.approx(bound, rel=1e-12)
    assert bound < 1e-4 * vth
    # ... and the same V a little beyond it is a disagreement
    arrays["vmem_at_fire_check/conv1"][spot] += np.float32(3 * bound)
    code, out, _ = run_diff(capsys, OR_MODEL, save(tmp_path / "no_tie.npz", arrays))
    assert code == 1 and "NOT a tie" in out


def test_a_tie_at_the_check_before_the_goldens(capsys, tmp_path):
    # libttfs fired one step before the golden: the tie is judged with the golden's V at the
    # check before its deciding one (vmem_at_previous_check), not at the deciding check
    arrays = load(EARLIEST_DUMP)
    image, h, w, c = spot = clear_neuron(arrays, "conv2")
    library_time = int(arrays["first_spike_times/conv2"][spot])
    start = int(arrays["fire_window/conv2"][0])
    for key in ("first_spike_times/conv2", "vmem_at_previous_check/conv2"):
        arrays[key] = arrays[key].copy()
    arrays["first_spike_times/conv2"][spot] = library_time + 1
    threshold = arrays["thresholds/conv2"][library_time - start]
    arrays["vmem_at_previous_check/conv2"][spot] = np.nextafter(threshold, np.float32(0))
    code, out, err = run_diff(capsys, EARLIEST_MODEL, save(tmp_path / "early.npz", arrays),
                              "--json")
    assert code == 0, out + err
    mismatch = json.loads(out)["first_mismatch"]
    assert (mismatch["layer"], mismatch["image"], tuple(mismatch["neuron"])) == \
        ("conv2", image, (h, w, c))
    assert mismatch["tie"] is True and mismatch["step"] == library_time
    assert mismatch["vmem"] == float(arrays["vmem_at_previous_check/conv2"][spot])
    assert mismatch["threshold"] == float(threshold)
    assert 0 < mismatch["gap"] <= 1e-7


def test_an_altered_potential_is_a_disagreement(capsys, tmp_path):
    arrays = load(EARLIEST_DUMP)
    arrays["output_potentials"] = arrays["output_potentials"].copy()
    arrays["output_potentials"][9, 4] += np.float32(0.01)
    code, out, _ = run_diff(capsys, EARLIEST_MODEL, save(tmp_path / "potential.npz", arrays))
    assert code == 1
    assert "first-spike times: every neuron of every layer agrees" in out
    assert "potential of image 9 class 4" in out
    assert "max |libttfs - golden| 0.01 (image 9, class 4)" in out


# ---- bad input ----------------------------------------------------------------------------------

def assert_one_line_error(code, out, err, *words):
    assert code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_missing_files(capsys, tmp_path):
    assert_one_line_error(*run_diff(capsys, tmp_path / "none.ttfs", OR_DUMP), "none.ttfs",
                          "no such file")
    assert_one_line_error(*run_diff(capsys, OR_MODEL, tmp_path / "none.npz"), "none.npz",
                          "no such file")


def test_golden_that_is_not_a_dump(capsys, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a zip\n")
    assert_one_line_error(*run_diff(capsys, OR_MODEL, text), "notes.npz", "not a readable .npz")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    assert_one_line_error(*run_diff(capsys, OR_MODEL, single), "single.npy", ".npz")

    arrays = load(OR_DUMP)
    del arrays["thresholds/conv2"]
    assert_one_line_error(*run_diff(capsys, OR_MODEL, save(tmp_path / "a.npz", arrays)),
                          "a.npz", "missing array 'thresholds/conv2'")
    arrays = load(OR_DUMP)
    arrays["format"] = np.array("something-else")
    assert_one_line_error(*run_diff(capsys, OR_MODEL, save(tmp_path / "b.npz", arrays)),
                          "b.npz", "format 'something-else'")
    arrays = load(OR_DUMP)
    arrays["first_spike_times/conv1"] = arrays["first_spike_times/conv1"][:, :5]
    assert_one_line_error(*run_diff(capsys, OR_MODEL, save(tmp_path / "c.npz", arrays)),
                          "c.npz", "'first_spike_times/conv1'", "(32, 5, 24, 12)",
                          "(32, 24, 24, 12)")


def test_model_that_is_not_the_goldens(capsys, tmp_path):
    from conftest import tiny_spec
    from export.ttfs_format import write_model

    tiny = tmp_path / "tiny.ttfs"
    write_model(tiny_spec(), tiny)
    assert_one_line_error(*run_diff(capsys, tiny, OR_DUMP), "tiny.ttfs", "5 layers",
                          "7")
    # same layers, other readout
    assert_one_line_error(*run_diff(capsys, EARLIEST_MODEL, OR_DUMP), "readout first_spike",
                          "readout vmem")
    broken = tmp_path / "broken.ttfs"
    broken.write_bytes(OR_MODEL.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(*run_diff(capsys, broken, OR_DUMP), "broken.ttfs", "CRC")


def test_images_out_of_range(capsys):
    for count in ("0", "33"):
        assert_one_line_error(*run_diff(capsys, OR_MODEL, OR_DUMP, "--images", count),
                              f"--images {count}", "32 images")


def test_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["diff", str(OR_MODEL), str(OR_DUMP), "--engine", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err
