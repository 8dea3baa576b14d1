"""Command line: python -m pyttfs info [MODEL] | diff MODEL GOLDEN"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path


def describe(path) -> dict:
    """What `python -m pyttfs info MODEL --json` prints (the same fields as
    `ttfs-infer MODEL --info --json`)."""
    import pyttfs

    with pyttfs.Model(path) as model:  # the library validates it (and names the file)
        data = Path(path).read_bytes()
        layers = []
        for layer in model.layers:
            entry = {"name": layer.name, "kind": layer.kind, "depth": layer.depth,
                     "shape": list(layer.shape)}
            if layer.kind in ("conv2d", "maxpool"):
                entry.update(kernel=list(layer.kernel), stride=list(layer.stride),
                             padding=layer.padding)
            if layer.kind == "maxpool":
                entry["pool_mode"] = layer.pool_mode
            if layer.has_neurons:
                entry.update(tau_fire=layer.tau_fire, td_fire=layer.td_fire,
                             tau_integ=layer.tau_integ, td_integ=layer.td_integ, vth0=layer.vth0,
                             integ_window=list(layer.integ_window),
                             fire_window=list(layer.fire_window))
            layers.append(entry)
        return {
            "model": str(path),
            # docs/FORMAT.md: format_version is the u32 at offset 8, the CRC-32 the last 4 bytes
            # (the library has validated both before this point).
            "format_version": struct.unpack_from("<I", data, 8)[0],
            "crc32": f"0x{struct.unpack_from('<I', data, len(data) - 4)[0]:08x}",
            "file_size": len(data),
            "time_steps": model.time_steps,
            "readout": model.readout,
            "input_shape": list(model.input_shape),
            "input_divisor": model.input_divisor,
            "classes": model.num_classes,
            "layers": layers,
            "metadata": model.metadata if model.metadata or not model.metadata_json.strip()
            else model.metadata_json,
        }


def _format_model(info: dict) -> str:
    lines = [f"model: {info['model']}",
             f"file: format version {info['format_version']}, {info['file_size']} bytes, "
             f"CRC-32 {info['crc32']}",
             f"input: {'x'.join(map(str, info['input_shape']))}, uint8 pixels divided by "
             f"{info['input_divisor']:g}",
             f"classes: {info['classes']}", f"readout: {info['readout']}",
             f"time steps: {info['time_steps']}", "layers:"]
    width = max(4, *(len(layer["name"]) for layer in info["layers"]))
    header = (f"  {'#':<3} {'name':<{width}}  {'kind':<7}  {'output':<11}  "
              f"{'kernel/stride/padding':<26}  {'integrate':<10}  {'fire':<10}  "
              "tau_fire td_fire tau_integ td_integ vth0")
    lines.append(header)
    for index, layer in enumerate(info["layers"]):
        window = "-"
        if "kernel" in layer:
            window = (f"{layer['kernel'][0]}x{layer['kernel'][1]} /{layer['stride'][0]}x"
                      f"{layer['stride'][1]} {layer['padding']}")
        if "pool_mode" in layer:
            window += f" {layer['pool_mode']}"
        integrate = fire = constants = "-"
        if "fire_window" in layer:
            integrate = ("t=0" if layer["kind"] == "input"
                         else "[{},{})".format(*layer["integ_window"]))
            fire = "[{},{})".format(*layer["fire_window"])
            constants = " ".join(f"{layer[k]:.9g}" for k in
                                 ("tau_fire", "td_fire", "tau_integ", "td_integ", "vth0"))
        shape = "x".join(map(str, layer["shape"]))
        lines.append(f"  {index:<3} {layer['name']:<{width}}  {layer['kind']:<7}  {shape:<11}  "
                     f"{window:<26}  {integrate:<10}  {fire:<10}  {constants}")
    if info["readout"] == "vmem":
        lines.append("  (vmem readout: the output layer integrates but never fires)")
    metadata = info["metadata"]
    lines.append("metadata: " + (json.dumps(metadata, sort_keys=True) if isinstance(metadata, dict)
                                 and metadata else (metadata or "(none)")))
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    import pyttfs

    if args.model is not None:
        try:
            info = describe(args.model)
        except (OSError, pyttfs.TtfsError) as error:
            print(f"python -m pyttfs info: error: {error}", file=sys.stderr)
            return 1
        print(json.dumps(info) if args.json else _format_model(info))
        return 0
    if args.json:
        print(json.dumps({"version": pyttfs.version(), "library": str(pyttfs.library_path),
                          "build": pyttfs.build_info(), "cuda_compiled": pyttfs.cuda_compiled(),
                          "cuda_devices": pyttfs.cuda_device_count(),
                          "include": pyttfs.get_include()}))
        return 0
    print(f"pyttfs {pyttfs.version()}")
    print(f"library: {pyttfs.library_path}")
    print(f"build: {pyttfs.build_info()}")
    print(f"CUDA compiled: {'yes' if pyttfs.cuda_compiled() else 'no'}")
    print(f"CUDA devices: {pyttfs.cuda_device_count()}")
    print(f"C header: {pyttfs.get_include()}/ttfs.h")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from pyttfs import diff

    try:
        report = diff.diff(args.model, args.golden, engine=args.engine, backend=args.backend,
                           images=args.images)
    except diff.DiffInputError as error:
        # one line, and 2: exit 1 means "the runs disagree", never "could not compare"
        print(f"python -m pyttfs diff: error: {error}", file=sys.stderr)
        return 2
    print(diff.format_json(report) if args.json else diff.format_report(report))
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyttfs",
                                     description="ttfs spiking-network runtime (libttfs)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser(
        "info", help="describe a model file, or (without MODEL) the library",
        description="With MODEL: its layers with shapes, window timings, time constants, pool "
                    "modes, readout, conversion metadata, file version and checksum (the "
                    "algorithm behind them: docs/ALGORITHM.md). Without: the library's version, "
                    "path and build.")
    info.add_argument("model", nargs="?", help="a .ttfs model file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_info)
    compare = commands.add_parser(
        "diff", help="compare a model's first-spike times and potentials with a golden dump",
        description="Run MODEL with libttfs on the images of GOLDEN (a dump written by "
                    "tests/golden/regenerate.py from the TensorFlow reference) and report, "
                    "layer by layer, where the two first disagree and whether each mismatch "
                    "is a threshold tie. Exit 0: agree up to ties; 1: a disagreement; "
                    "2: bad input.")
    compare.add_argument("model", help="the .ttfs model file")
    compare.add_argument("golden", help="the golden dump (.npz)")
    compare.add_argument("--engine", choices=("stepped", "analytic"), default="stepped",
                         help="(default: %(default)s)")
    compare.add_argument("--backend", choices=("cpu", "auto", "cuda"), default="cpu",
                         help="(default: %(default)s)")
    compare.add_argument("--images", type=int, default=None, metavar="N",
                         help="compare the first N images only (default: all of the golden's)")
    compare.add_argument("--json", action="store_true",
                         help="print one JSON object instead of the report")
    compare.set_defaults(handler=_diff)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except OSError as error:  # pyttfs.LibraryError: no library, or the wrong one
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
