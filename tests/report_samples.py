"""TEST FIXTURES ONLY: fabricated xfbench results in every input format the report reads.

Nothing here was measured. The numbers are plausible inventions so the report can
be built and looked at before (and independently of) a real benchmark run:

* `cpu_run(dir)`      a complete run folder from a 2-core CPU box (step, accuracy, parity,
                      a skipped and a failed cell);
* `gpu_json(path)`    a pytest-benchmark JSON file from an H100 box (two specs, four batch sizes);
* `partial_run(dir)`  an interrupted run folder: planned cells without a file are missing;
* `corrupt(path)`     a truncated JSON file;
* `history(dir)`      a pytest-benchmark storage folder with four commits, the last one slower;
* `gate(path)`        the gate's verdict marking that regression;
* `new_impls(dir)`    a third box that also runs two implementations no code has heard of
                      ("jax-raw", "flax-nnx"): results and a history of two commits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

IMPLS = (("flax", "jax"), ("keras-jax", "jax"), ("keras-tf", "tensorflow"))
NEW_IMPLS = (("flax", "jax"), ("jax-raw", "jax"), ("flax-nnx", "jax"))  # listed in this order, not alphabetically
VERSIONS = {"jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", "optax": "0.2.8", "keras": "3.15.0",
            "tensorflow": "2.21.0", "tensorflow_datasets": "4.9.10"}
FP = "3f9a0c2e7d41b58e9c0d6a1f2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"


def spec(image_size=64, pool_stride=1) -> dict:
    return {"image_size": image_size, "filters": [16, 32], "kernel_size": 3, "pool_window": 2,
            "pool_stride": pool_stride, "dense_units": 64, "num_classes": 2, "channels": 3}


def params(image_size, stride) -> int:
    side = image_size
    for _ in range(2):
        side = (side - 2) // stride + 1
    return (27 * 16 + 16) + (9 * 16 * 32 + 32) + side * side * 32 * 64 + 64 + 64 * 2 + 2


def machine_info(kind: str, profile: str = "default") -> dict:
    if kind == "cpu":
        node, cpu, gpus, cls, count = "cpu-box", "Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz", [], "cpu-2core", 2
        dataset = {"source": "folder", "source_detail": "~/data/horse-or-human (zip layout)", "protocol": "original",
                   "image_size": 64, "fingerprint": FP,
                   "splits": {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}}
        sp = spec(64, 1)
    else:
        node, cpu, gpus, cls, count = "gpu-box", "AMD EPYC 9454 48-Core Processor", ["NVIDIA H100 80GB HBM3"], "h100", 16
        dataset = {"source": "synthetic", "source_detail": "deterministic stand-in (no network)", "protocol": "resplit",
                   "image_size": 300, "fingerprint": "synthetic-" + FP[:40],
                   "splits": {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}}
        sp = spec(300, 1)
    return {
        "node": node, "processor": "x86_64", "machine": "x86_64", "python_implementation": "CPython",
        "python_version": "3.11.2", "python_compiler": "GCC 12.2.0", "release": "6.1.0-27-amd64", "system": "Linux",
        "cpu": {"brand_raw": cpu, "count": count, "arch": "X86_64"},
        "xfbench": {"versions": VERSIONS, "cpu": cpu, "gpus": gpus,
                    "xla_flags": "" if kind == "cpu" else "--xla_gpu_autotune_level=2",
                    "dataset": dataset, "spec": sp, "spec_is_origin": True, "profile": profile, "machine_class": cls},
    }


def _stats(median, rng, rounds=20):
    sd = median * 0.03
    q1, q3 = median * (1 - rng.uniform(0.01, 0.04)), median * (1 + rng.uniform(0.01, 0.05))
    return {"min": median * 0.95, "max": median * 1.2, "mean": median * 1.01, "stddev": sd, "median": median,
            "iqr": q3 - q1, "q1": q1, "q3": q3, "rounds": rounds, "iterations": 1, "ops": 1 / median,
            "total": median * rounds, "iqr_outliers": 1, "stddev_outliers": 1, "outliers": "1;1", "ld15iqr": q1,
            "hd15iqr": q3}


def step_cell(impl, backend, device, bs, image_size, stride, base_ms, rng, peak, steps_per_call=1, data="real"):
    factor = {"flax": 1.0, "keras-jax": 1.06, "keras-tf": 1.55}.get(impl, 1.2)
    step = base_ms * 1e-3 * factor * (bs / 32) ** 0.92 * rng.uniform(0.97, 1.03)
    fwd = 2 * image_size ** 2 * 27 * 16
    s1 = (image_size - 2) // stride + 1
    s2 = (s1 - 2) // stride + 1
    fwd += 2 * s1 * s1 * 9 * 16 * 32 + 2 * s2 * s2 * 32 * 64
    flops = 3 * fwd * bs
    compile_s = {"flax": 0.9, "keras-jax": 1.7, "keras-tf": 3.2}.get(impl, 1.3) * (1.6 if device != "cpu" else 1.0) * rng.uniform(0.95, 1.05)
    jaxy = backend == "jax"
    stats = _stats(step * steps_per_call, rng)
    extra = {
        "status": "ok", "reason": None, "kind": "step", "impl": impl, "backend": backend, "device": device,
        "batch_size": bs, "image_size": image_size, "pool_stride": stride, "spec_is_origin": stride == 1,
        "steps_per_call": steps_per_call, "step_s_median": step, "step_s_q1": stats["q1"] / steps_per_call,
        "step_s_q3": stats["q3"] / steps_per_call, "images_per_s": bs / step, "compile_s": compile_s,
        "first_step_s": compile_s + step, "trace_s": 0.12 * compile_s if jaxy else None,
        "lower_s": 0.08 * compile_s if jaxy else None, "compile_only_s": 0.7 * compile_s if jaxy else None,
        "epoch_s": step * 1027 / bs * 1.1, "flops_per_step": flops, "flops_source": "xla" if jaxy else "analytic",
        "flops_analytic": flops, "peak_flops": peak, "mfu": flops / step / peak, "peak_memory_bytes": 2 ** 20 * bs * 9,
        "recompiles": 0, "warmup_steps": 3, "data": data, "dataset_fingerprint": FP,
    }
    name = f"test_step[{impl}-{device.split()[0].lower() if device != 'cpu' else 'cpu'}-bs{bs}-{image_size}px-s{stride}]"
    return name, stats, extra


def acc_cell(impl, backend, device, protocol, augment, rng, epochs=8, seeds=(0, 1, 2), image_size=64, stride=1,
             from_cache=False, data="real"):
    base = {"original": 0.80, "resplit": 0.93}[protocol] + (0.03 if augment else 0.0)
    hist, finals = [], []
    for s in seeds:
        rs = random.Random(hash((impl, protocol, augment, s)) & 0xFFFF)
        per = []
        for e in range(1, epochs + 1):
            prog = 1 - 0.6 ** e
            train = min(0.5 + 0.5 * prog * (1.0 if not augment else 0.96) + rs.uniform(-0.01, 0.01), 1.0)
            test = 0.5 + (base - 0.5) * prog + rs.uniform(-0.03, 0.03)
            per.append({"epoch": e, "train_loss": max(0.02, 0.7 * (1 - prog)) + rs.uniform(0, 0.02),
                        "train_accuracy": train, "test_accuracy": test})
        hist.append(per)
        finals.append(per[-1]["test_accuracy"])
    mean = sum(finals) / len(finals)
    sd = (sum((x - mean) ** 2 for x in finals) / (len(finals) - 1)) ** 0.5 if len(finals) > 1 else 0.0  # as the harness
    extra = {"status": "ok", "reason": None, "kind": "accuracy", "impl": impl, "backend": backend, "device": device,
             "protocol": protocol, "augment": augment, "epochs": epochs, "seeds": list(seeds), "batch_size": 32,
             "image_size": image_size, "pool_stride": stride, "test_accuracy_mean": mean, "test_accuracy_sd": sd,
             "test_accuracies": finals, "history": hist, "from_cache": from_cache, "train_s": 41.0 * epochs,
             "data": data}
    return f"test_accuracy[{impl}-{protocol}-{'aug' if augment else 'noaug'}]", extra


def parity_extra(image_size=64, stride=1, tf_logit=5.5e-7, impls=IMPLS):
    p = params(image_size, stride)
    rows = {
        "flax": {"params": p, "max_abs_logit_diff": 0.0, "max_rel_loss_diff": 0.0, "max_rel_loss_diff_native_adam": 0.0},
        "keras-jax": {"params": p, "max_abs_logit_diff": 0.0, "max_rel_loss_diff": 7.9e-8, "max_rel_loss_diff_native_adam": 1.2e-3},
        "keras-tf": {"params": p, "max_abs_logit_diff": tf_logit, "max_rel_loss_diff": 3.1e-6, "max_rel_loss_diff_native_adam": 1.2e-3},
    }
    other = {"params": p, "max_abs_logit_diff": 1.2e-7, "max_rel_loss_diff": 2.0e-7, "max_rel_loss_diff_native_adam": 4.0e-4}
    return {"kind": "parity", "status": "ok", "parity": {
        "spec": spec(image_size, stride),
        "impls": {name: rows.get(name, other) for name, _ in impls},
        "bounds": {"max_abs_logit_diff": 1e-5, "max_rel_loss_diff": 1e-5},
    }}


def _bench(group: str, name: str, stats, extra: dict, fullname: str | None = None) -> dict:
    """One entry of a pytest-benchmark JSON file's 'benchmarks' list."""
    return {"group": group, "name": name, "fullname": fullname or name, "params": {}, "stats": stats,
            "options": {}, "extra_info": extra}


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def cpu_run(root: Path, run_id: str = "20250101-120000-cpu") -> Path:
    rng = random.Random(1)
    folder = root / run_id
    cells = []
    for impl, backend in IMPLS:
        for bs in (16, 32, 64):
            name, stats, extra = step_cell(impl, backend, "cpu", bs, 64, 1, 38.0, rng, peak=2.6e11)
            cells.append({"id": name, "name": name, "kind": "step", "status": "ok", "reason": None, "stats": stats,
                          "extra_info": extra})
        for protocol, aug in (("original", False), ("resplit", False), ("original", True)):
            name, extra = acc_cell(impl, backend, "cpu", protocol, aug, rng, from_cache=(protocol == "resplit"))
            cells.append({"id": name, "name": name, "kind": "accuracy", "status": "ok", "reason": None, "stats": None,
                          "extra_info": extra})
    cells[0]["extra_info"]["warnings"] = ["harness overhead 3.1% exceeds 2% (round trip 1.20 ms): the machine was busy"]
    cells.append({"id": "test_parity", "name": "test_parity", "kind": "parity", "status": "ok", "reason": None,
                  "stats": None, "extra_info": parity_extra()})
    cells.append({"id": "test_step[keras-tf-gpu-bs32-64px-s1]", "name": "test_step[keras-tf-gpu-bs32-64px-s1]",
                  "kind": "step", "status": "skipped", "reason": "no GPU visible on this machine", "stats": None,
                  "extra_info": {"impl": "keras-tf", "backend": "tensorflow", "device": "gpu", "kind": "step"}})
    cells.append({"id": "test_step[keras-jax-cpu-bs128-64px-s1]", "name": "test_step[keras-jax-cpu-bs128-64px-s1]",
                  "kind": "step", "status": "failed",
                  "reason": "worker exited with code -9 (out of memory?) after 212 s", "stats": None,
                  "extra_info": {"impl": "keras-jax", "backend": "jax", "device": "cpu", "kind": "step",
                                 "batch_size": 128}})
    for c in cells:
        _write(folder / "cells" / (c["id"].replace("[", "_").replace("]", "") + ".json"), c)
    _write(folder / "run.json", {"run_id": run_id, "started": "2025-01-01T12:00:00", "finished": "2025-01-01T12:14:10",
                                 "profile": "default", "commit": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
                                 "machine_info": machine_info("cpu"), "planned": [c["id"] for c in cells]})
    return folder


def gpu_json(path: Path) -> Path:
    rng = random.Random(2)
    benches = []
    for impl, backend in IMPLS:
        for stride in (1, 2):
            for bs in (32, 64, 128, 256):
                base = 2.4 if stride == 1 else 0.9
                name, stats, extra = step_cell(impl, backend, "NVIDIA H100 80GB HBM3", bs, 300, stride, base, rng,
                                               peak=6.1e14, steps_per_call=10, data="synthetic")
                benches.append({**_bench("step", name, stats, extra, f"benchmarks/test_step.py::{name}"),
                                "params": {"impl": impl, "batch_size": bs}, "param": f"{impl}-{bs}"})
        for protocol, aug in (("original", False), ("resplit", False), ("original", True), ("resplit", True)):
            name, extra = acc_cell(impl, backend, "NVIDIA H100 80GB HBM3", protocol, aug, rng, epochs=12,
                                   seeds=(0, 1, 2, 3, 4), image_size=300, data="synthetic")
            benches.append(_bench("accuracy", name, None, extra, f"benchmarks/test_accuracy.py::{name}"))
    benches.append(_bench("parity", "test_parity", None, parity_extra(300, 1, 2.1e-6),
                          "benchmarks/test_parity.py::test_parity"))
    return _write(path, {
        "machine_info": machine_info("gpu", profile="full"),
        "commit_info": {"id": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "time": "2025-01-01T11:00:00+00:00",
                        "author_time": "2025-01-01T11:00:00+00:00", "dirty": False, "project": "xfbench",
                        "branch": "main"},
        "benchmarks": benches, "datetime": "2025-01-01T13:05:00.000000+00:00", "version": "5.3.0",
    })


def partial_run(root: Path, run_id: str = "20250102-090000-cpu") -> Path:
    """An interrupted quick run on the CPU box: 2 of 4 planned cells finished."""
    rng = random.Random(3)
    folder = root / run_id
    planned = []
    for impl, backend in IMPLS[:2]:
        name, stats, extra = step_cell(impl, backend, "cpu", 8, 32, 1, 9.0, rng, peak=2.6e11)
        planned.append(name)
        _write(folder / "cells" / f"{impl}.json", {"id": name, "name": name, "kind": "step", "status": "ok",
                                                    "reason": None, "stats": stats, "extra_info": extra})
    planned += ["test_step[keras-tf-cpu-bs8-32px-s1]", "test_accuracy[flax-original-noaug-quick]"]
    _write(folder / "run.json", {"run_id": run_id, "started": "2025-01-02T09:00:00", "finished": None,
                                 "profile": "quick", "commit": None, "machine_info": machine_info("cpu", "quick"),
                                 "planned": planned})
    return folder


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"machine_info": {"node": "cpu-box"}, "benchmarks": [{"name": "test_step[fl')
    return path


def wrong_shape(path: Path) -> Path:
    return _write(path, [1, 2, 3])


def history(root: Path) -> Path:
    """Four saved runs on the CPU box; the last commit made keras-jax 25% slower."""
    storage = root / ".benchmarks" / "Linux-CPython-3.11-64bit"
    commits = ["0a1b2c3d4e", "1b2c3d4e5f", "2c3d4e5f60", "3d4e5f6071"]
    for i, commit in enumerate(commits):
        rng = random.Random(10 + i)
        benches = []
        for impl, backend in IMPLS:
            for bs in (16, 32):
                base = 38.0 * (1.25 if (impl == "keras-jax" and i == 3) else 1.0) * (1 - 0.02 * i)
                name, stats, extra = step_cell(impl, backend, "cpu", bs, 64, 1, base, rng, peak=2.6e11)
                benches.append(_bench("step", name, stats, extra))
        _write(storage / f"{i + 1:04d}_{commit}_20250101_12000{i}.json", {
            "machine_info": machine_info("cpu"),
            "commit_info": {"id": commit + "0" * 30, "time": f"2024-12-2{i}T10:00:00+00:00",
                            "dirty": i == 3, "branch": "main", "project": "xfbench"},
            "benchmarks": benches, "datetime": f"2024-12-2{i}T12:00:00+00:00", "version": "5.3.0"})
    return root / ".benchmarks"


def gate(path: Path) -> Path:
    return _write(path, {"baseline": "2c3d4e5f60", "regressions": [
        {"impl": "keras-jax", "device": "cpu", "batch_size": 16, "image_size": 64, "ratio": 1.24, "confidence": 0.99},
        {"impl": "keras-jax", "device": "cpu", "batch_size": 32, "image_size": 64, "ratio": 1.26, "confidence": 0.99},
    ]})


def new_impls(root: Path) -> dict:
    """The box "nnx-box" runs flax, "jax-raw" and "flax-nnx": step, accuracy and parity cells in a
    pytest-benchmark JSON file, and a storage folder with the step cells of two commits."""
    info = machine_info("cpu")
    info["node"] = "nnx-box"
    rng = random.Random(4)
    benches = []
    for impl, backend in NEW_IMPLS:
        for bs in (16, 32):
            benches.append(_bench("step", *step_cell(impl, backend, "cpu", bs, 64, 1, 30.0, rng, peak=2.6e11)))
        name, extra = acc_cell(impl, backend, "cpu", "original", False, rng, epochs=4)
        benches.append(_bench("accuracy", name, None, extra))
    benches.append(_bench("parity", "test_parity", None, parity_extra(impls=NEW_IMPLS)))
    results = _write(root / "results" / "nnx-box.json", {
        "machine_info": info, "benchmarks": benches, "datetime": "2025-01-03T10:00:00+00:00", "version": "5.3.0",
        "commit_info": {"id": "b" * 40, "time": "2025-01-03T09:00:00+00:00", "dirty": False}})
    storage = root / "nnx-history" / "Linux-CPython-3.11-64bit"
    for i, commit in enumerate(("4e5f607182", "5f60718293")):
        steps = [_bench("step", *step_cell(impl, backend, "cpu", 32, 64, 1, 30.0 + i, rng, peak=2.6e11))
                 for impl, backend in NEW_IMPLS]
        _write(storage / f"{i + 1:04d}_{commit}.json", {
            "machine_info": info, "benchmarks": steps, "datetime": f"2025-01-0{i + 1}T12:00:00+00:00",
            "commit_info": {"id": commit + "0" * 30, "time": f"2025-01-0{i + 1}T10:00:00+00:00", "dirty": False}})
    return {"results": results, "history": storage.parent}


def everything(root: Path) -> dict:
    """Write every sample under `root`; return the paths by name."""
    root = Path(root)
    runs = root / ".xfbench" / "runs"
    return {
        "cpu_run": cpu_run(runs),
        "partial_run": partial_run(runs),
        "gpu_json": gpu_json(root / "results" / "gpu-box.json"),
        "corrupt": corrupt(root / "results" / "broken.json"),
        "wrong_shape": wrong_shape(root / "results" / "list.json"),
        "history": history(root),
        "gate": gate(root / ".xfbench" / "gate" / "last.json"),
    }


# --------------------------------------------------------------------------- replicates (issue 11)

H100 = "NVIDIA H100 80GB HBM3"
# (device, batch size) -> series -> the median step time of each of three worker processes, in seconds.
# On the CPU, flax and keras-jax are within noise and keras-tf is clearly slower; on the GPU flax is
# clearly fastest. "flax (A/A copy)" is the A/A control: the same flax code run as its own series.
REPLICATE_STEPS = {
    ("cpu", 16): {"flax": [0.0215, 0.0211, 0.0219], "keras-jax": [0.0213, 0.0220, 0.0216],
                  "keras-tf": [0.0330, 0.0324, 0.0335], "flax (A/A copy)": [0.0214, 0.0217, 0.0212]},
    ("cpu", 32): {"flax": [0.0400, 0.0410, 0.0396], "keras-jax": [0.0405, 0.0398, 0.0412],
                  "keras-tf": [0.0600, 0.0612, 0.0595], "flax (A/A copy)": [0.0402, 0.0407, 0.0399]},
    (H100, 128): {"flax": [0.00200, 0.00202, 0.00199], "keras-jax": [0.00240, 0.00243, 0.00238],
                  "keras-tf": [0.00320, 0.00318, 0.00325]},
}
REPLICATE_COMPILE = {"flax": [0.90, 0.95, 0.92], "keras-jax": [1.70, 1.65, 1.75], "keras-tf": [3.2, 3.3, 3.1],
                     "flax (A/A copy)": [0.91, 0.93, 0.94]}
TIMED_REGION = {
    "flax": "one jitted train step (forward, backward, optax Adam update) on a device-resident batch, synchronised",
    "keras-jax": "one Keras train_step via the JAX backend on a device-resident batch, synchronised",
    "keras-tf": "one tf.function train step on a device-resident batch, synchronised",
}
USER_LOOP = {
    "flax": "idiomatic Flax loop: one jitted step per host batch",
    "keras-jax": "model.fit, verbose 0, second epoch",
    "keras-tf": "model.fit, verbose 0, second epoch",
}
THREADS = {"env": {"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": None},
           "framework": {"intra_op": 2, "inter_op": 1}}


def replicate_step(series: str, device: str, bs: int, r: int, step: float, compile_s: float, replicates: int = 3,
                   image_size: int = 64, profile: str = "default") -> dict:
    """A new-format step cell record: worker process `r` of `replicates`, stats per step, and the command
    that measures it again (replicate 0's id, and so its command, selects every replicate)."""
    impl = series.split(" ")[0]
    aa = series.endswith("(A/A copy)")
    backend = "tensorflow" if impl == "keras-tf" else "jax"
    dev = "cpu" if device == "cpu" else "gpu"
    cid = f"step-{impl}{'-aa' if aa else ''}-{dev}-s{image_size}-p1-b{bs}" + (f"-r{r}" if r else "")
    stats = {"min": step * 0.96, "max": step * 1.2, "mean": step * 1.01, "stddev": step * 0.02, "median": step,
             "iqr": step * 0.05, "q1": step * 0.98, "q3": step * 1.03, "rounds": 20, "iterations": 1,
             "ops": 1 / step, "total": step * 20}
    flops = 3 * bs * (2 * image_size ** 2 * 27 * 16 + 2 * 62 ** 2 * 9 * 16 * 32 + 2 * 61 ** 2 * 32 * 64)
    peak = 2.6e11 if device == "cpu" else 5.1e14
    user_step = step * (1.35 if impl.startswith("keras") else 1.15)
    extra = {
        "status": "ok", "kind": "step", "impl": impl, "backend": backend, "device": device, "batch_size": bs,
        "image_size": image_size, "pool_stride": 1, "replicate": r, "replicates": replicates, "stats_unit": "step",
        "steps_per_call": 10, "step_s_median": step, "step_s_q1": step * 0.98, "step_s_q3": step * 1.03,
        "images_per_s": bs / step, "compile_s": compile_s, "first_step_s": compile_s + step,
        "trace_s": 0.12 * compile_s if backend == "jax" else None, "lower_s": 0.08 * compile_s if backend == "jax" else None,
        "compile_only_s": 0.7 * compile_s if backend == "jax" else None,
        "timed_region": TIMED_REGION[impl], "user_loop": USER_LOOP[impl], "user_epoch_s": user_step * 1027 / bs,
        "user_images_per_s": bs / user_step, "flops_per_step": flops, "flops_source": "analytic",
        "flops_xla": flops * 1.04 if backend == "jax" else None,
        "flops_xla_to_analytic": 1.04 if backend == "jax" else None, "peak_flops": peak,
        "matmul_rate_precision": "float32", "matmul_rate_framework": "jax", "mfu": flops / step / peak,
        "threads": THREADS, "peak_memory_bytes": 2 ** 20 * bs * 9, "memory_source": "rss" if device == "cpu" else "device",
        "rss_growth_bytes": 2 ** 20 * 3 if device == "cpu" else None, "recompiles": 0, "data": "real",
        "command": command(profile, impl, dev, cid, aa),
    }
    if aa:
        extra["aa_copy"] = True
    return {"id": cid, "name": f"test_step[{cid}]", "kind": "step", "status": "ok", "reason": None, "stats": stats,
            "extra_info": extra}


def command(profile: str, impl: str, device: str, cid: str, aa: bool = False) -> str:
    """A cell's reproduce command, as the harness records it."""
    return (f"pytest --benchmark-only --xf-profile={profile} --xf-impls={impl} --xf-devices={device} "
            f"--xf-source=folder{f' --xf-aa={impl}' if aa else ''} -k '{cid}'")


def replicated_run(root: Path, run_id: str = "20250201-100000-rep") -> Path:
    """A run folder from "rep-box": every step cell in 3 worker processes, in seeded random interleaved order
    (machine_info's impl_order gives the registry's), an A/A copy of flax on the CPU, and accuracy cells
    (flax with one seed, keras-jax with three). As the harness writes them, only replicate 0 records XLA's
    FLOP count and the epoch as users run it."""
    folder = root / run_id
    cells = []
    for (device, bs), by_series in REPLICATE_STEPS.items():
        for series, steps in by_series.items():
            scale = 1.0 if device == "cpu" else 1.6
            cells += [replicate_step(series, device, bs, r, step, REPLICATE_COMPILE[series][r] * scale)
                      for r, step in enumerate(steps)]
    for c in cells:
        if c["extra_info"]["replicate"]:
            c["extra_info"].update(flops_xla=None, flops_xla_to_analytic=None)
            for k in ("user_epoch_s", "user_images_per_s", "user_loop"):
                del c["extra_info"][k]
    order = random.Random(11)
    order.shuffle(cells)
    rng = random.Random(12)
    for impl, backend, seeds in (("flax", "jax", (0,)), ("keras-jax", "jax", (0, 1, 2))):
        name, extra = acc_cell(impl, backend, "cpu", "original", False, rng, epochs=4, seeds=seeds)
        extra["command"] = command("default", impl, "cpu", name)
        cells.append({"id": name, "name": name, "kind": "accuracy", "status": "ok", "reason": None, "stats": None,
                      "extra_info": extra})
    for c in cells:
        _write(folder / "cells" / f"{c['id']}.json", c)
    info = machine_info("cpu")
    info["node"] = "rep-box"
    info["xfbench"].update(gpus=[H100], impl_order=["flax", "keras-jax", "keras-tf"], replicates=3, aa="flax",
                           order_seed=11, stats_unit="step")
    _write(folder / "run.json", {"run_id": run_id, "started": "2025-02-01T10:00:00", "finished": "2025-02-01T10:40:00",
                                 "profile": "default", "commit": "c" * 40, "machine_info": info,
                                 "planned": [c["id"] for c in cells]})
    return folder


def single_replicate_run(root: Path, run_id: str = "20250202-100000-solo") -> Path:
    """A run folder from "solo-box" in the new format but with one worker process per cell: no interval."""
    folder = root / run_id
    cells = [replicate_step(impl, "cpu", 32, 0, step, comp, replicates=1, profile="quick")
             for impl, step, comp in (("flax", 0.0400, 0.9), ("keras-jax", 0.0460, 1.7))]
    for c in cells:
        _write(folder / "cells" / f"{c['id']}.json", c)
    info = machine_info("cpu")
    info["node"] = "solo-box"
    _write(folder / "run.json", {"run_id": run_id, "started": "2025-02-02T10:00:00", "finished": "2025-02-02T10:05:00",
                                 "profile": "quick", "commit": "d" * 40, "machine_info": info,
                                 "planned": [c["id"] for c in cells]})
    return folder


def mixed_history(root: Path) -> Path:
    """Saved pytest-benchmark runs of "rep-box" across four commits, the same speed throughout:
    two old files (stats per timed call of 10 steps; the second without step_s_* figures) and two new
    ones (stats per step, 3 worker processes; the first without step_s_* figures)."""
    storage = root / ".benchmarks-mixed" / "Linux-CPython-3.11-64bit"
    info = machine_info("cpu")
    info["node"] = "rep-box"
    info["xfbench"]["gpus"] = [H100]
    for i, commit in enumerate(("6a7b8c9d0e", "7b8c9d0e1f", "8c9d0e1f20", "9d0e1f2031")):
        new = i >= 2
        benches = []
        for r in range(3 if new else 1):
            rec = replicate_step("flax", "cpu", 32, r, REPLICATE_STEPS[("cpu", 32)]["flax"][r], 0.9)
            extra = rec["extra_info"]
            if not new:  # the old format: one process, per-call statistics, no replicate fields
                rec["stats"] = {k: v * 10 if k not in ("rounds", "iterations", "ops") else v
                                for k, v in rec["stats"].items()}
                for k in ("replicate", "replicates", "stats_unit"):
                    del extra[k]
            if i in (1, 2):
                for k in ("step_s_median", "step_s_q1", "step_s_q3"):
                    del extra[k]
            benches.append(_bench("step", rec["name"], rec["stats"], extra))
        _write(storage / f"{i + 1:04d}_{commit}.json", {
            "machine_info": info, "benchmarks": benches, "datetime": f"2025-01-1{i}T12:00:00+00:00",
            "commit_info": {"id": commit + "0" * 30, "time": f"2025-01-1{i}T10:00:00+00:00", "dirty": False}})
    return storage.parent


def replicates(root: Path) -> dict:
    """Write the replicate samples under `root`; return the paths by name."""
    runs = Path(root) / ".xfbench" / "runs"
    return {"replicated_run": replicated_run(runs), "single_replicate_run": single_replicate_run(runs),
            "mixed_history": mixed_history(Path(root))}
