"""pyttfs.ray: batch inference on Ray Data, checked against a plain pyttfs Session.

One local Ray (2 CPUs and one GPU that exists only as a Ray resource, so that the GPU request
and the CPU fallback run without a GPU) is started for the whole module and shut down at its
end, with a check that none of its processes is left. The data: the 100 MNIST test images and
labels committed in models/, as arrays, IDX, .npy, PNG files and encoded bytes.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
PIL_Image = pytest.importorskip("PIL.Image")

import pyttfs  # noqa: E402
import pyttfs.ray as pray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mnist.ttfs"
IMAGES_IDX = ROOT / "models" / "mnist-test-100-images.idx"
LABELS_IDX = ROOT / "models" / "mnist-test-100-labels.idx"
CORRUPT = ROOT / "tests" / "corrupt" / "bad_crc.ttfs"
FALLBACK_LINE = "falling back to the CPU backend"


def idx_array(path: Path) -> np.ndarray:
    """The IDX layout written out here (magic 0x0000080N, N big-endian u32 dims, bytes)."""
    data = path.read_bytes()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data[4 + 4 * rank:], np.uint8).reshape(dims)


IMAGES = idx_array(IMAGES_IDX)  # (100, 28, 28)
MODEL_SHAPE = (28, 28, 1)
LABELS = idx_array(LABELS_IDX).astype(np.int64)


def plain_run(engine: str = "analytic") -> dict:
    """A plain session over the same images: predictions, potentials, every neuron layer's
    spike counts."""
    with pyttfs.Model(MODEL) as model, model.session(backend="cpu", engine=engine,
                                                     max_batch=len(IMAGES)) as session:
        result = session.run(IMAGES[..., np.newaxis])
        spikes = {f"spikes_{layer.name}": session.spike_counts(layer.name)
                  for layer in model.layers if layer.has_neurons}
    return dict(prediction=result.predictions, potentials=result.potentials, **spikes)


@pytest.fixture(scope="module")
def reference() -> dict:
    return {engine: plain_run(engine) for engine in ("analytic", "stepped")}


def ray_processes(raylet_pid: int) -> set:
    """Processes of the local Ray: its own daemons (their command lines name the session
    directory) and the workers (RAY_RAYLET_PID in their environment)."""
    session = os.path.basename(ray._private.worker._global_node.get_session_dir_path())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if session.encode() in cmdline or f"RAY_RAYLET_PID={raylet_pid}\0".encode() in environ:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for this module: 2 CPUs, one make-believe GPU; no Ray process survives it."""
    if ray.is_initialized():
        pytest.fail("a Ray instance is already running in this process")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    context = ray.init(num_cpus=2, num_gpus=1, include_dashboard=False,
                       object_store_memory=150 * 2**20, logging_level=logging.WARNING)
    print(f"\nlocal Ray started in {time.perf_counter() - started:.1f} s")
    node = ray._private.worker._global_node
    raylet_pid = node.all_processes["raylet"][0].process.pid
    logs = Path(node.get_logs_dir_path())
    yield dict(address=context.address_info["gcs_address"], logs=logs)
    started = time.perf_counter()
    processes = ray_processes(raylet_pid)
    ray.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(pid) for pid in processes):
        time.sleep(0.2)
    left = sorted(pid for pid in processes if alive(pid))
    print(f"\nlocal Ray shut down in {time.perf_counter() - started:.1f} s "
          f"({len(processes)} processes)")
    assert processes, "found no process of the local Ray: the check below would prove nothing"
    assert not left, f"Ray processes still running after ray.shutdown(): {left}"


def collect(dataset) -> dict:
    """All rows of a dataset as arrays, in the order of the `index` (or `path`) column."""
    batches = list(dataset.iter_batches(batch_format="numpy", batch_size=None))
    columns = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
    key = columns["index"] if "index" in columns else index_of(columns["path"])
    order = np.argsort(key, kind="stable")
    return {name: values[order] for name, values in columns.items()}


def assert_same_results(rows: dict, expected: dict, spike_counts: bool = True) -> None:
    np.testing.assert_array_equal(rows["prediction"], expected["prediction"])
    assert rows["prediction"].dtype == np.int32
    # Bit for bit: float32 bit patterns, not a tolerance.
    np.testing.assert_array_equal(rows["potentials"].view(np.uint32),
                                  expected["potentials"].view(np.uint32))
    if spike_counts:
        names = [name for name in expected if name.startswith("spikes_")]
        assert sorted(name for name in rows if name.startswith("spikes_")) == sorted(names)
        for name in names:
            np.testing.assert_array_equal(rows[name], expected[name], err_msg=name)


def run_with_timeout(function, seconds: float):
    """function() in a thread: its result or exception, and how long it took; a test failure
    (not a hung test run) when it has not returned after `seconds`."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    started = time.perf_counter()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no answer after {seconds} s: the job hangs"
    return outcome, time.perf_counter() - started


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory) -> Path:
    """The 100 images as PNG files, one folder per class: <label>/<index>.png."""
    root = tmp_path_factory.mktemp("png")
    for index, (image, label) in enumerate(zip(IMAGES, LABELS)):
        (root / str(label)).mkdir(exist_ok=True)
        PIL_Image.fromarray(image).save(root / str(label) / f"{index:03d}.png")
    return root


def index_of(paths) -> np.ndarray:
    return np.array([int(Path(str(path)).stem) for path in paths])


# ---- Without Ray running ---------------------------------------------------------------------

def test_plan_on_a_cpu_cluster():
    cluster = {"CPU": 8.0}
    plan = pray.plan_workers(cluster, "auto", threads=2)
    assert (plan.workers, plan.num_cpus, plan.num_gpus, plan.backend) == (4, 2, 0, "cpu")
    # One CPU kept for the stages before the model (reading files).
    assert pray.plan_workers(cluster, "auto", reserve_cpus=1).workers == 7
    assert pray.plan_workers(cluster, "cpu", workers=3).workers == 3
    with pytest.raises(ValueError, match=r"3 worker\(s\) x 3 thread\(s\) need 9 CPUs.*8 CPU"):
        pray.plan_workers(cluster, "cpu", workers=3, threads=3)
    with pytest.raises(ValueError, match="stages before them need 1 more"):
        pray.plan_workers({"CPU": 2.0}, "cpu", workers=2, reserve_cpus=1)
    with pytest.raises(ValueError, match="backend = 'cuda' asks Ray for one GPU per worker, "
                                         "but the cluster has 8 CPU and 0 GPU"):
        pray.plan_workers(cluster, "cuda")
    with pytest.raises(ValueError, match="backend = 'tpu'"):
        pray.plan_workers(cluster, "tpu")
    with pytest.raises(ValueError, match="threads = 0"):
        pray.plan_workers(cluster, "cpu", threads=0)


def test_plan_on_a_gpu_cluster():
    cluster = {"CPU": 16.0, "GPU": 4.0}
    plan = pray.plan_workers(cluster, "auto")
    assert (plan.workers, plan.num_cpus, plan.num_gpus, plan.backend, plan.note) == \
        (4, None, 1, "cuda", "")
    plan = pray.plan_workers(cluster, "cuda", workers=6)
    assert (plan.workers, plan.num_gpus) == (4, 1)
    assert plan.note == "6 workers asked for, 4 started: one GPU each (the cluster has 16 CPU " \
                        "and 4 GPU)"
    assert pray.plan_workers(cluster, "cuda", workers=2).workers == 2
    plan = pray.plan_workers(cluster, "cpu", threads=4)  # GPUs left alone when asked
    assert (plan.workers, plan.num_cpus, plan.num_gpus, plan.backend) == (4, 4, 0, "cpu")


def test_predictor_outputs_without_ray(reference):
    """The predictor as a plain callable: columns, (n, h, w) input, top-k and confidence by hand."""
    expected = reference["analytic"]
    predictor = pray.Predictor(MODEL.read_bytes(), backend="cpu", max_batch=30, top_k=3,
                               spike_counts=["conv1", "fc1"])
    index = np.arange(100)
    out = predictor({"index": index, "image": IMAGES})  # (n, h, w): one channel added
    assert list(out) == ["index", "image", "prediction", "top_k", "top_k_potentials",
                         "confidence", "spikes_conv1", "spikes_fc1"]
    assert out["index"] is index and out["image"] is IMAGES
    np.testing.assert_array_equal(out["prediction"], expected["prediction"])
    np.testing.assert_array_equal(out["spikes_conv1"], expected["spikes_conv1"])
    np.testing.assert_array_equal(out["spikes_fc1"], expected["spikes_fc1"])
    potentials = expected["potentials"].astype(np.float64)
    for row in range(100):
        ranked = sorted(range(10), key=lambda c: (-potentials[row, c], c))[:3]
        assert out["top_k"][row].tolist() == ranked
        assert out["top_k_potentials"][row].tolist() == potentials[row, ranked].tolist()
        weights = [np.exp(p - potentials[row].max()) for p in potentials[row]]
        assert out["confidence"][row] == pytest.approx(
            weights[expected["prediction"][row]] / sum(weights), rel=1e-6)
    assert out["top_k"].dtype == np.int32 and out["confidence"].dtype == np.float32
    np.testing.assert_array_equal(out["top_k"][:, 0], out["prediction"])  # vmem readout
    predictor.close()


def test_predictor_rows_of_different_shapes_and_encoded_bytes(reference):
    """Object columns are read row by row as pyttfs.read_images reads files: the same
    decoding, channel conversion, size check and messages (naming the row's path)."""
    expected = reference["analytic"]
    predictor = pray.Predictor(MODEL, backend="cpu", keep_images=False)
    paths = np.array(["a", "b", "c.png", "d.png"])
    rows = np.empty(4, dtype=object)
    rows[0] = IMAGES[0]                       # (h, w)
    rows[1] = IMAGES[1][..., np.newaxis]      # (h, w, 1)
    encoded = []
    for image in IMAGES[2:4]:
        stream = io.BytesIO()
        PIL_Image.fromarray(image).convert("RGB").save(stream, format="PNG")  # gray as RGB
        encoded.append(stream.getvalue())
    rows[2], rows[3] = encoded
    out = predictor({"path": paths, "image": rows})
    assert "image" not in out
    np.testing.assert_array_equal(out["prediction"], expected["prediction"][:4])
    np.testing.assert_array_equal(out["potentials"].view(np.uint32),
                                  expected["potentials"][:4].view(np.uint32))

    rows[1] = np.zeros((28, 27, 1), np.uint8)
    with pytest.raises(pyttfs.ImageReadError, match=r"^b: the image is 28x27 but the model "
                                                    r"expects 28x28 inputs"):
        predictor({"path": paths, "image": rows})
    resizing = pray.Predictor(MODEL, backend="cpu", resize=True)
    assert resizing({"path": paths, "image": rows})["prediction"].shape == (4,)
    rows[1] = IMAGES[1]
    rows[3] = b"\x89PNG\r\n\x1a\n not really"
    with pytest.raises(pyttfs.ImageReadError, match=r"^d.png: cannot decode the image"):
        predictor({"path": paths, "image": rows})
    with pytest.raises(pyttfs.ImageReadError, match=r"^image 7: cannot decode the image"):
        predictor({"index": np.array([7]), "image": np.array([b"GIF89a"], dtype=object)})
    with pytest.raises(KeyError, match="no column 'pixels' in the batch"):
        pray.Predictor(MODEL, backend="cpu", image_column="pixels")({"image": IMAGES})


def test_predictor_options_are_checked(dense_model_path):
    with pytest.raises(ValueError, match="spike_counts: no neuron layer 'pool1'; the model's "
                                         "neuron layers are input, conv1, conv2, fc1"):
        pray.Predictor(MODEL, spike_counts=["pool1"])
    with pytest.raises(ValueError, match="top_k = 11; the model has 10 classes"):
        pray.Predictor(MODEL, top_k=11)
    with pytest.raises(ValueError, match="'first_spike' readout"):
        pray.Predictor(dense_model_path, top_k=1)
    with pytest.raises(ValueError, match="engine = 'fast'"):
        pray.Predictor(MODEL, engine="fast")
    with pytest.raises(ValueError, match="max_batch = 0"):
        pray.Predictor(MODEL, max_batch=0)
    with pytest.raises(pyttfs.TtfsError) as error:
        pray.Predictor(CORRUPT.read_bytes())
    assert error.value.status == "TTFS_ERR_BAD_CRC"


@pytest.mark.skipif(pyttfs.cuda_device_count() > 0, reason="a CUDA device is present")
def test_predictor_cuda_falls_back_with_a_log_line(caplog, reference):
    with caplog.at_level(logging.WARNING, logger="pyttfs.ray"):
        predictor = pray.Predictor(MODEL, backend="cuda", threads=2)
    assert predictor.backend == "cpu"
    reason = ("libttfs finds no usable CUDA device" if pyttfs.cuda_compiled()
              else "libttfs was built without CUDA")
    assert [record.getMessage() for record in caplog.records] == [
        f"pyttfs.ray: {reason} (Ray gave this worker GPU none, CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); falling back to the CPU backend with "
        "2 thread(s)"]
    out = predictor({"image": IMAGES[:5]})
    np.testing.assert_array_equal(out["prediction"], reference["analytic"]["prediction"][:5])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyttfs.ray"):
        assert pray.Predictor(MODEL, backend="auto").backend == "cpu"
    assert caplog.records == []  # no GPU asked for, none given: nothing to say


# ---- On the module's local Ray ----------------------------------------------------------------

@pytest.mark.parametrize("batch_size,workers,engine", [
    (1, 1, "analytic"), (7, 2, "stepped"), (64, 1, "stepped"), (64, 2, "analytic")])
def test_same_bits_as_a_plain_session(cluster, reference, batch_size, workers, engine):
    """Batches of 1, 7 (not dividing the 16-row blocks) and 64 images, 1 and 2 workers, both
    engines: the same predictions, potentials and spike counts as a plain session."""
    dataset = pray.from_arrays(IMAGES, LABELS, rows_per_block=16)
    rows = collect(pray.predict(dataset, MODEL, workers=workers, batch_size=batch_size,
                                backend="cpu", engine=engine, spike_counts=True))
    np.testing.assert_array_equal(rows["index"], np.arange(100))
    np.testing.assert_array_equal(rows["label"], LABELS)     # input columns come back
    np.testing.assert_array_equal(rows["image"], IMAGES)
    assert_same_results(rows, reference[engine])
    assert_same_results(rows, reference["analytic"])  # the engines agree bit for bit


def test_encoded_bytes_column(cluster, reference, png_dir):
    """PNG files as bytes (ray.data.read_binary_files), decoded by the predictor."""
    expected = reference["analytic"]
    files = ray.data.read_binary_files(str(png_dir), include_paths=True)  # column "bytes"
    rows = collect(pray.predict(files, MODEL, batch_size=25, backend="cpu",
                                image_column="bytes", keep_images=False))
    assert "bytes" not in rows
    np.testing.assert_array_equal(index_of(rows["path"]), np.arange(100))
    assert_same_results(rows, expected, spike_counts=False)


def test_gpu_requested_and_cpu_fallback(cluster, reference):
    """The module's Ray has one GPU (a Ray resource only): "auto" asks for it, one worker per
    GPU, and the worker, finding no device, runs on the CPU and says so."""
    plan = pray.plan_workers(ray.cluster_resources(), "auto", workers=2)
    assert (plan.workers, plan.num_gpus, plan.backend) == (1, 1, "cuda")
    before = {path: path.stat().st_size for path in cluster["logs"].glob("worker-*.err")}
    rows = collect(pray.predict(pray.from_arrays(IMAGES), MODEL, workers=2, batch_size=50))
    assert_same_results(rows, reference["analytic"], spike_counts=False)
    if pyttfs.cuda_device_count() > 0:
        return  # a real device: the worker ran on CUDA (bit-identical, checked above)
    deadline, lines = time.monotonic() + 20, []
    while time.monotonic() < deadline and not lines:
        for path in cluster["logs"].glob("worker-*.err"):
            with open(path, "rb") as stream:
                stream.seek(before.get(path, 0))
                lines += [line for line in stream.read().decode(errors="replace").splitlines()
                          if FALLBACK_LINE in line]
        time.sleep(0.2)
    assert len(lines) == 1, lines
    assert "(Ray gave this worker GPU 0, CUDA_VISIBLE_DEVICES='0')" in lines[0]


def test_corrupt_model_fails_at_once(cluster):
    with pytest.raises(pyttfs.TtfsError) as expected:
        pyttfs.Model(CORRUPT)
    with pytest.raises(pyttfs.TtfsError) as error:
        pray.predict(pray.from_arrays(IMAGES), CORRUPT)
    assert str(error.value) == str(expected.value)
    assert str(CORRUPT) in str(error.value)


def test_corrupt_model_in_the_workers_fails_the_job(cluster):
    """Past predict()'s check (the predictor used directly): the actors' failure ends the job
    with the library's message instead of leaving it waiting for workers."""
    with pytest.raises(pyttfs.TtfsError) as expected:
        pyttfs.Model.from_bytes(CORRUPT.read_bytes())
    dataset = pray.from_arrays(IMAGES).map_batches(
        pray.Predictor, fn_constructor_kwargs={"model": CORRUPT.read_bytes(), "backend": "cpu"},
        compute=ray.data.ActorPoolStrategy(size=1), batch_size=10, batch_format="numpy")
    outcome, seconds = run_with_timeout(dataset.materialize, 180)
    print(f"failed after {seconds:.1f} s")
    assert "error" in outcome, "the job succeeded with a corrupt model"
    assert str(expected.value) in str(outcome["error"])


def test_bad_image_fails_the_job_with_the_library_message(cluster):
    bad = IMAGES.astype(np.int64)
    bad[42, 3, 4] = 300  # no pixel value
    with pyttfs.Model(MODEL) as model, model.session(backend="cpu") as session:
        with pytest.raises((ValueError, pyttfs.TtfsError)) as expected:
            session.run(bad[40:45])  # (n, h, w), as the Ray batch
    message = str(expected.value)
    dataset = pray.predict(pray.from_arrays(bad, rows_per_block=5), MODEL, workers=1, batch_size=5,
                           backend="cpu")
    outcome, seconds = run_with_timeout(dataset.materialize, 180)
    print(f"failed after {seconds:.1f} s")
    assert "error" in outcome, "the job succeeded with a bad image"
    # Ray Data's UserCodeException carries the worker's traceback as text.
    assert f"pyttfs.ray.ImageError: images 40, 41, 42, ... (5 rows): {message}\n" in \
        str(outcome["error"])


def test_cli_png_folder(cluster, reference, png_dir, tmp_path, capsys):
    """python -m pyttfs.ray on a folder of PNG files with class folders (in this process, on
    the module's Ray, backend auto: its make-believe GPU, then the CPU), JSON output, top-k."""
    expected = reference["analytic"]
    out = tmp_path / "png-out"
    assert pray.main([str(MODEL), str(png_dir), str(out), "--label-dirs", "--format", "json",
                      "--top-k", "3", "--batch-size", "40"]) == 0
    printed = capsys.readouterr().out
    correct = int(np.count_nonzero(expected["prediction"] == LABELS))
    assert f"accuracy: {correct:.2f} % ({correct} / 100)" in printed  # 100 images: % == count
    assert re.search(r"^images: 100 in \d+\.\d s: \d+ images/s \(reading, Ray's start-up and "
                     r"the workers' included; writing not\)$", printed, re.M)
    records = [json.loads(line) for path in sorted(out.iterdir())
               for line in path.read_text().splitlines()]
    assert len(records) == 100
    assert set(records[0]) == {"path", "label", "prediction", "top_k", "top_k_potentials",
                               "confidence"}
    records.sort(key=lambda record: int(Path(record["path"]).stem))
    assert [record["label"] for record in records] == LABELS.tolist()
    assert [record["prediction"] for record in records] == expected["prediction"].tolist()
    assert [record["top_k"][0] for record in records] == expected["prediction"].tolist()
    for record, potentials in zip(records, expected["potentials"]):
        # JSON keeps 15 decimal places (Parquet, in the test below, keeps the bits)
        np.testing.assert_allclose(record["top_k_potentials"],
                                   potentials[record["top_k"]].astype(np.float64),
                                   rtol=0, atol=1e-14)


def test_cli_errors(cluster, tmp_path, capsys):
    """Bad inputs found before any job starts: exit 2 and the library's message."""
    short = tmp_path / "short.idx"
    short.write_bytes(IMAGES_IDX.read_bytes()[:-1])
    expected = {}
    for name, read in (("short", lambda: pyttfs.read_images(short, MODEL_SHAPE)),
                       ("labels", lambda: pyttfs.read_labels(IMAGES_IDX)),
                       ("model", lambda: pyttfs.Model(CORRUPT))):
        with pytest.raises((ValueError, pyttfs.TtfsError)) as error:
            read()
        expected[name] = str(error.value)
    cases = [
        ([str(CORRUPT), str(IMAGES_IDX)], expected["model"]),
        ([str(MODEL), str(short)], expected["short"]),
        ([str(MODEL), str(IMAGES_IDX), "--labels", str(IMAGES_IDX)], expected["labels"]),
        ([str(MODEL), str(tmp_path / "nothing")],
         f"{tmp_path / 'nothing'}: no such file or folder"),
        ([str(MODEL), str(IMAGES_IDX), "--label-dirs"],
         "--label-dirs goes with a folder of images"),
    ]
    for args, message in cases:
        assert pray.main(args + [str(tmp_path / "out")]) == 2, args
        assert f"python -m pyttfs.ray: error: {message}\n" == capsys.readouterr().err, args
    with pytest.raises(SystemExit):
        pray.main([str(MODEL)])


def test_cli_bad_image_in_a_folder_fails_the_job(cluster, png_dir, tmp_path, capsys):
    """A file that is not an image, found by a worker: the job fails (exit 1) with the
    library's message naming the file, under a watchdog."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("000.png", "001.png"):
        (folder / name).write_bytes((png_dir / "7" / name).read_bytes() if name == "000.png"
                                    else b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(pyttfs.ImageReadError) as expected:
        pyttfs.read_images(folder / "001.png", MODEL_SHAPE)
    outcome, seconds = run_with_timeout(
        lambda: pray.main([str(MODEL), str(folder), str(tmp_path / "out"), "--backend", "cpu"]),
        180)
    print(f"failed after {seconds:.1f} s")
    assert outcome.get("value") == 1
    assert capsys.readouterr().err.endswith(
        f"python -m pyttfs.ray: the job failed: {expected.value}\n")


def test_cli_idx_on_a_cluster_address(cluster, reference, tmp_path):
    """A second driver: the command line in its own process, joining the module's Ray by
    address; gzipped IDX images, IDX labels, Parquet output with spike counts."""
    expected = reference["analytic"]
    out = tmp_path / "idx-out"
    packed = tmp_path / "images.idx.gz"
    packed.write_bytes(gzip.compress(IMAGES_IDX.read_bytes()))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pyttfs.ray", str(MODEL), str(packed),
                             str(out), "--address", cluster["address"], "--labels",
                             str(LABELS_IDX), "--backend", "cpu", "--workers", "2",
                             "--batch-size", "30", "--spike-counts"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    print(f"command line run: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    correct = int(np.count_nonzero(expected["prediction"] == LABELS))
    assert f"accuracy: {correct:.2f} % ({correct} / 100)" in result.stdout
    assert "2 worker(s), each 1 CPU and 0 GPU; backend cpu" in result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert str(table.schema.field("prediction").type) == "int32"
    assert str(table.schema.field("spikes_conv1").type) == "int32"
    table = table.to_pydict()
    assert set(table) == {"index", "label", "prediction", "potentials", "spikes_input",
                          "spikes_conv1", "spikes_conv2", "spikes_fc1"}
    rows = {name: np.array(values) for name, values in table.items()}
    rows.update({name: values.astype(np.int32) for name, values in rows.items()
                 if name == "prediction" or name.startswith("spikes_")})
    rows["potentials"] = rows["potentials"].astype(np.float32)
    order = np.argsort(rows["index"])
    rows = {name: values[order] for name, values in rows.items()}
    np.testing.assert_array_equal(rows["index"], np.arange(100))
    np.testing.assert_array_equal(rows["label"], LABELS)
    assert_same_results(rows, expected)
