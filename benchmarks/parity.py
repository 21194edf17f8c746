"""`xfbench parity`: prove the implementations compute the same network.

For each implementation: the parameter count, the largest absolute logit
difference against flax after loading flax's initial weights, and the largest
relative loss difference over K Adam steps on identical deterministic batches
from those same weights. Keras fixes its backend at import, so every
implementation runs in its own worker process (`python -m benchmarks.parity
--worker NAME ...`); weights, batches and results travel through .npz files.
All start at once: the others import their framework and build their model
while the reference runs, then load its initial weights.

Adam is matched: Keras adds epsilon to sqrt(v) before bias correction, optax
after it, so every implementation runs Keras's formulation (TrainConfig.adam_form
= "keras"). The reference is also run with optax's native Adam (same epsilon),
and its drift from the matched runs of the others is reported as
`native_adam_max_rel_loss_diff`: what a user who assumes "Adam is Adam" would see.

A workload whose model carries state between steps (BatchNorm's running statistics: the
`resnet` workload) also reports the state count, the state after the first step and after every
step against the reference's (`max_rel_first_state_diff`, `max_rel_state_diff`) and the eval-mode
logits after the trajectory, which use the trained running statistics (`max_abs_trained_logit_diff`).
The first step (its loss, and the state after it) is held to float32 rounding. Later steps cannot be:
Adam's early updates follow a gradient's sign more than its size, so a rounding difference moves a
weight by a whole learning rate, and the trajectory drifts. How far, parity measures rather than
guesses: the reference runs again from its own weights with every kernel moved by one float32 ulp,
twice (`noise_floor`: the larger drift). Measured here: from 5e-7 to 6e-3 relative in the running
statistics after 10 steps at 16 px, depending on which ulps moved. The trajectory is therefore held
to `TRAJECTORY_BOUND`, a gross-error bound above that drift; what it cannot see (a wrong momentum,
epsilon or padding) the first step and the logits before training do.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import workloads
from benchmarks.registry import NAMES, REFERENCE, entry, missing
from benchmarks.spec import PRECISIONS, ModelSpec, TrainConfig
from benchmarks.store import write_atomic
from benchmarks.worker_client import worker_env
from shared_data.cli import bounded, image_size_arg, seed_arg
from shared_data.preprocess import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

LOGIT_BOUND = 1e-5
LOSS_BOUND = 1e-3
# a model with state, after its first step: the loss and the running statistics (relative to each array's
# largest magnitude), float32 rounding alone (a momentum of 0.99 for 0.9 moves them by order 1e-1)
FIRST_STEP_BOUND = 1e-5
# ...and over the whole trajectory: loss, running statistics and the eval logits after it, above the
# drift that one float32 ulp causes (`noise_floor`, up to 6e-3)
TRAJECTORY_BOUND = 2e-2
NUDGES = 2  # one-ulp nudged runs of the reference
# bf16: the logits against the float32 reference, where bfloat16 (8 significant bits, relative rounding
# up to 2^-9 at every layer) moves logits of order 1 by a few thousandths; a model error (a wrong layer,
# stride or initialiser) moves them by order 1. The loss trajectory against the reference's own bf16 run:
# against float32 it is not bounded, since the rounding sends a short Adam trajectory elsewhere within a
# few steps (reported as `float32_max_rel_loss_diff`, as the native-Adam drift is), while two frameworks
# rounding the same way stay within a few tenths of a percent
BF16_LOGIT_BOUND = 0.1
BF16_LOSS_BOUND = 0.05


def bounds(precision: str) -> dict[str, float]:
    """What each implementation may differ from the float32 reference by, at `precision`."""
    if precision == "float32":
        return {"max_abs_logit_diff": LOGIT_BOUND, "max_rel_loss_diff": LOSS_BOUND}
    return {"max_abs_logit_diff": BF16_LOGIT_BOUND, "max_rel_loss_diff": BF16_LOSS_BOUND}


class ParityError(RuntimeError):
    pass


def make_batches(spec: ModelSpec, steps: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic synthetic uint8 batches: images (K, B, H, W, C), labels (K, B)."""
    rng = np.random.default_rng(seed)
    shape = (steps, batch_size, spec.image_size, spec.image_size, spec.channels)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, size=(steps, batch_size)).astype(np.int32)
    return images, labels


def _trajectory(impl, images: np.ndarray, labels: np.ndarray, state_keys: list[str]) -> tuple[np.ndarray, dict]:
    """The loss of each step and, where the model has state, that state after each step (key -> (K, ...))."""
    losses, states = [], {k: [] for k in state_keys}
    for x, y in zip(images, labels):
        losses.append(impl.train_step(impl.to_device({"image": x, "label": y})))
        if state_keys:
            now = impl.get_weights()
            for k in state_keys:
                states[k].append(now[k])
    return np.array([impl.sync(v) for v in losses], np.float64), {k: np.stack(v) for k, v in states.items()}


def _one_ulp_off(weights: dict, seed: int) -> dict:
    """Every kernel moved by one float32 ulp, up or down at random: what rounding alone could change."""
    rng = np.random.default_rng(seed)
    return {k: np.where(rng.random(v.shape) < 0.5, np.nextafter(v, np.inf), np.nextafter(v, -np.inf)).astype(v.dtype)
            if k.endswith("kernel") else v for k, v in weights.items()}


def worker(name: str, in_path: str, out_path: str, config: dict) -> None:
    """Runs in a fresh process: one implementation, its logits and its loss (and state) trajectory."""
    from benchmarks import registry

    workload = workloads.get(config.get("workload", workloads.ORIGIN))
    spec = workload.spec(config["spec"])
    train = TrainConfig.from_dict(config["train"])
    cls = registry.load(name, workload.name)
    impl = cls(name, spec, train, config["seed"], device=config["device"])
    _wait_for(Path(in_path))  # started beside the reference, whose weights it loads
    data = dict(np.load(in_path))
    initial = {k[len("w:"):]: v for k, v in data.items() if k.startswith("w:")}
    if initial:
        impl.set_weights(initial)
    else:
        initial = impl.get_weights()
    images, labels = data["images"], data["labels"]
    state_keys = [k for k in sorted(initial) if spec.is_state(k)]
    out = {"params": np.array(impl.num_params()), "logits": impl.logits(images[0])}
    out["losses"], states = _trajectory(impl, images, labels, state_keys)
    out["device"] = np.array(impl.device_name())
    if state_keys:
        out.update({f"s:{k}": v for k, v in states.items()}, state_count=np.array(impl.num_state()),
                   trained_logits=impl.logits(images[0]))
        for i in range(NUDGES if config.get("noise_floor") else 0):  # the trajectory's own float32 drift
            impl.set_weights(_one_ulp_off(initial, config["seed"] + i))  # the optimizer reset, nothing traced again
            floor_losses, floor_states = _trajectory(impl, images, labels, state_keys)
            out.update({f"floor{i}:s:{k}": v for k, v in floor_states.items()}, **{f"floor{i}:losses": floor_losses},
                       **{f"floor{i}:trained_logits": impl.logits(images[0])})
    out.update({f"w:{k}": v for k, v in initial.items()})
    if config.get("native") and train.adam_form != "optax":
        native = cls(name, spec, dataclasses.replace(train, adam_form="optax"), config["seed"], device=config["device"])
        native.set_weights(initial)
        out["native_losses"] = _trajectory(native, images, labels, [])[0]
    np.savez(out_path, **out)


def _wait_for(path: Path) -> None:
    """Until the parent has written `path` (atomically); a worker whose parent is gone gives up."""
    parent = os.getppid()
    while not path.exists():
        if os.getppid() != parent:
            raise SystemExit(f"parity worker: the parent went before {path.name} was written")
        time.sleep(0.05)


def _start_worker(name: str, in_path: Path, out_path: Path, config: dict) -> subprocess.Popen:
    entry(name)  # unknown name -> clear error before spawning
    env = worker_env(None)  # the harness's settings: on a GPU no worker preallocates the memory of all
    env.pop("KERAS_BACKEND", None)
    cmd = [sys.executable, "-m", "benchmarks.parity", "--worker", name,
           "--in", str(in_path), "--out", str(out_path), "--config", json.dumps(config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _result(name: str, proc: subprocess.Popen, out_path: Path) -> dict:
    stderr = proc.communicate()[1]
    if proc.returncode != 0:
        raise ParityError(f"parity worker {name} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    with np.load(out_path) as f:
        return {k: f[k] for k in f.files}


def _max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref) / np.maximum(np.abs(ref), 1e-12)))


def _max_rel_state(out: dict, ref: dict, steps: slice = slice(None), prefix: str = "") -> float:
    """The largest difference of any state value at any of `steps`, relative to the largest magnitude that
    state array reaches in the reference (running means start at 0: an element-wise ratio would not do);
    `prefix` picks another trajectory of `out` ("floor:")."""
    keys = [k for k in ref if k.startswith("s:")]
    return max(float(np.max(np.abs(out[prefix + k][steps] - ref[k][steps])) / max(float(np.max(np.abs(ref[k]))), 1e-12))
               for k in keys)


def run_parity(
    spec: ModelSpec,
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
    impls=NAMES,
    train: TrainConfig | None = None,
    device: str = "cpu",
    workload: str = workloads.ORIGIN,
) -> dict:
    """Compare every implementation against flax in float32; returns the --json object. With `train` at
    another precision (bf16), every implementation, flax included, runs at that precision: its logits
    against the float32 reference, its losses against flax's at that precision, within `bounds(precision)`."""
    for name in impls:
        entry(name)
    # an implementation whose framework is not installed here is left out, and said so (the GPU image
    # has no TensorFlow); the reference must run
    not_run = {n: f"not installed here: {', '.join(lacks)}" for n in impls if (lacks := missing(n))}
    if REFERENCE in not_run:
        raise ParityError(f"the reference {REFERENCE} cannot run: {not_run[REFERENCE]}")
    impls = [n for n in impls if n not in not_run]
    train = train or TrainConfig()
    reference_train = dataclasses.replace(train, precision="float32")
    images, labels = make_batches(spec, steps, batch_size, seed)
    config = {"spec": spec.to_dict(), "train": reference_train.to_dict(), "seed": seed, "device": device,
              "native": train == reference_train}  # the native-Adam drift: among float32 runs only
    if spec.num_state:  # the trajectory's own float32 drift, from the reference run one ulp off
        config["noise_floor"] = True
    if workload != workloads.ORIGIN:  # the origin's config names no workload, as before workloads existed
        config["workload"] = workload
    with tempfile.TemporaryDirectory(prefix="xfbench-parity-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "in_ref.npz", images=images, labels=labels)
        # every worker starts at once (its framework imported, its model built), the others then wait for
        # the reference's initial weights
        others = [n for n in impls if n != REFERENCE or train != reference_train]
        ref_proc = _start_worker(REFERENCE, tmp / "in_ref.npz", tmp / "out_ref.npz", config)
        procs = {n: _start_worker(n, tmp / "in.npz", tmp / f"out_{n}.npz",
                                  dict(config, train=train.to_dict(), native=False)) for n in others}
        with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
            futures = {n: pool.submit(_result, n, p, tmp / f"out_{n}.npz") for n, p in procs.items()}
            try:
                ref = _result(REFERENCE, ref_proc, tmp / "out_ref.npz")
            except BaseException:
                for p in procs.values():
                    p.kill()
                raise
            weights = {k: v for k, v in ref.items() if k.startswith("w:")}
            buf = io.BytesIO()
            np.savez(buf, images=images, labels=labels, **weights)
            write_atomic(tmp / "in.npz", buf.getvalue())
            outs = {n: f.result() for n, f in futures.items()}
    lowered = outs.get(REFERENCE)  # the reference at the lower precision: what the trajectories follow
    outs.setdefault(REFERENCE, ref)
    trajectory = lowered if lowered is not None else ref
    result = {
        "spec": spec.to_dict(),
        "train": train.to_dict(),
        "precision": train.precision,
        "reference_precision": reference_train.precision,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "expected_params": spec.num_params,
        "bounds": bounds(train.precision),
        "impls": {},
        "not_run": not_run,
    }
    stateful = "state_count" in ref
    if workload != workloads.ORIGIN:
        result["workload"] = workload
    if stateful:
        nudges = [f"floor{i}:" for i in range(NUDGES)]
        floor = {"max_rel_loss_diff": max(_max_rel(ref[f + "losses"], ref["losses"]) for f in nudges),
                 "max_rel_state_diff": max(_max_rel_state(ref, ref, prefix=f) for f in nudges),
                 "max_abs_trained_logit_diff": max(float(np.max(np.abs(ref[f + "trained_logits"] - ref["trained_logits"])))
                                                   for f in nudges)}
        result.update(expected_state=spec.num_state, noise_floor=floor)
        result["bounds"] = {**result["bounds"], "max_rel_loss_diff": TRAJECTORY_BOUND,
                            "max_rel_first_loss_diff": FIRST_STEP_BOUND, "max_rel_first_state_diff": FIRST_STEP_BOUND,
                            "max_rel_state_diff": TRAJECTORY_BOUND, "max_abs_trained_logit_diff": TRAJECTORY_BOUND}
    for name in impls:
        o = outs[name]
        row = {
            "params": int(o["params"]),
            "max_abs_logit_diff": float(np.max(np.abs(o["logits"] - ref["logits"]))),
            "max_rel_loss_diff": _max_rel(o["losses"], trajectory["losses"]),
            "device": str(o["device"]),
            "losses": [float(v) for v in o["losses"]],
        }
        if lowered is not None:
            row["float32_max_rel_loss_diff"] = _max_rel(o["losses"], ref["losses"])
        if stateful:
            row.update(state=int(o["state_count"]), max_rel_first_loss_diff=_max_rel(o["losses"][:1], trajectory["losses"][:1]),
                       max_rel_first_state_diff=_max_rel_state(o, trajectory, slice(0, 1)),
                       max_rel_state_diff=_max_rel_state(o, trajectory),
                       max_abs_trained_logit_diff=float(np.max(np.abs(o["trained_logits"] - trajectory["trained_logits"]))))
        result["impls"][name] = row
    if "native_losses" in ref:
        native = ref["native_losses"]
        row = result["impls"][REFERENCE]
        row["native_losses"] = [float(v) for v in native]
        drift = {n: _max_rel(native, outs[n]["losses"]) for n in impls if n != REFERENCE}
        # alone, the reference's own matched run is what the native one drifts from
        row["native_adam_max_rel_loss_diff"] = max(drift.values()) if drift else _max_rel(native, ref["losses"])
        row["native_adam_vs"] = drift
        row["native_adam_note"] = (
            f"optax.adam(eps={train.eps}) adds eps to sqrt(v_hat) after bias correction; Keras adds it to "
            f"sqrt(v) before, i.e. acts like optax with eps/sqrt(1-b2^t). Parity runs every implementation "
            f"in Keras's form; this is {REFERENCE} with optax's own Adam against those runs."
        )
    return result


WHAT = {"max_abs_logit_diff": "max |logit diff|", "max_rel_loss_diff": "max relative loss diff",
        "max_rel_first_loss_diff": "the first step's loss, relative diff",
        "max_rel_first_state_diff": "the running statistics after the first step, relative diff",
        "max_rel_state_diff": "the running statistics over the trajectory, relative diff",
        "max_abs_trained_logit_diff": "max |logit diff| after the trajectory"}


def violations(result: dict) -> list[str]:
    out = []
    limit = result.get("bounds") or bounds(result.get("precision", "float32"))
    for name, row in result["impls"].items():
        if row["params"] != result["expected_params"]:
            out.append(f"{name}: {row['params']:,} parameters, expected {result['expected_params']:,}")
        if "state" in row and row["state"] != result["expected_state"]:
            out.append(f"{name}: {row['state']:,} state values, expected {result['expected_state']:,}")
        for key, bound in limit.items():
            if key in row and not row[key] <= bound:
                floor = result.get("noise_floor", {}).get(key)
                out.append(f"{name}: {WHAT[key]} {row[key]:.3g} > {bound:g}"
                           + (f" (the reference one ulp off drifts by {floor:.3g})" if floor is not None else ""))
    return out


def format_table(result: dict) -> str:
    s = result["spec"]
    shape = f"pool stride {s['pool_stride']}" if "pool_stride" in s else f"workload {result.get('workload')}"
    stateful = "expected_state" in result
    lines = [
        f"parity: {s['image_size']}x{s['image_size']}, {shape}, "
        f"{result['steps']} Adam steps, batch {result['batch_size']}, reference {REFERENCE}",
        f"{'impl':<10} {'params':>12} {'max|dlogit|':>12} {'max rel dloss':>14}"
        + (f" {'state':>6} {'1st step dstate':>15} {'max rel dstate':>14} {'trained|dlogit|':>15}"
           if stateful else "") + "  device",
    ]
    for name, row in result["impls"].items():
        lines.append(f"{name:<10} {row['params']:>12,} {row['max_abs_logit_diff']:>12.2e} "
                     f"{row['max_rel_loss_diff']:>14.2e}"
                     + (f" {row['state']:>6,} {row['max_rel_first_state_diff']:>15.2e} {row['max_rel_state_diff']:>14.2e} "
                        f"{row['max_abs_trained_logit_diff']:>15.2e}" if stateful else "") + f"  {row['device']}")
    ref = result["impls"].get(REFERENCE, {})
    if "native_adam_max_rel_loss_diff" in ref:
        lines.append(f"{REFERENCE} with optax's native Adam drifts from the matched runs by "
                     f"{ref['native_adam_max_rel_loss_diff']:.2e} relative ({ref['native_adam_note']})")
    limit = result.get("bounds") or bounds(result.get("precision", "float32"))
    against = ("" if result.get("precision", "float32") == "float32" else
               f" ({result['precision']}: logits against the float32 reference, losses against "
               f"{REFERENCE} in {result['precision']})")
    for name, why in result.get("not_run", {}).items():
        lines.append(f"{name}: not run, {why}")
    lines.append(f"bounds: logits {limit['max_abs_logit_diff']:g}, losses {limit['max_rel_loss_diff']:g} relative"
                 + (f" (with state: the first step's loss and running statistics {FIRST_STEP_BOUND:g}, the "
                    f"trajectory's loss, running statistics and logits after it {TRAJECTORY_BOUND:g}; the "
                    f"reference one ulp off drifts by {result['noise_floor']['max_rel_loss_diff']:.3g}, "
                    f"{result['noise_floor']['max_rel_state_diff']:.3g} and "
                    f"{result['noise_floor']['max_abs_trained_logit_diff']:.3g})" if stateful else "")
                 + f"{against}; expected params {result['expected_params']:,}"
                 + (f", state {result['expected_state']:,}" if stateful else ""))
    return "\n".join(lines)


def _impls(text: str) -> list[str]:
    """argparse `type=` of --impls: registered names, comma-separated."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"no implementation named; choose from {', '.join(NAMES)}")
    for name in names:
        try:
            entry(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=image_size_arg, default=ModelSpec().image_size, metavar="N",
                        help=f"square input side, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (default {ModelSpec().image_size})")
    parser.add_argument("--pool-stride", type=int, choices=(1, 2), default=ModelSpec().pool_stride,
                        help="the origin's pool stride (other workloads have none)")
    parser.add_argument("--workload", choices=tuple(workloads.all_workloads()), default=workloads.ORIGIN,
                        help=f"the model compared (default {workloads.ORIGIN})")
    parser.add_argument("--steps", type=bounded(int, 1, 10_000), default=10, help="Adam steps compared (default 10)")
    parser.add_argument("--batch-size", type=bounded(int, 1, 65_536), default=16, help="default 16")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the weights and batches (default 0)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--impls", type=_impls, default=list(NAMES), help="comma-separated implementation names")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bf16: every implementation in bfloat16 against the float32 reference (default float32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    w = workloads.get(args.workload)
    try:
        if args.precision not in w.precisions:
            raise ValueError(f"the {w.name} workload runs in {', '.join(w.precisions)} only, not {args.precision}")
        result = run_parity(w.make_spec(args.image_size, args.pool_stride), steps=args.steps,
                            batch_size=args.batch_size, seed=args.seed, workload=w.name,
                            impls=[n for n in args.impls if n in w.impls], device=args.device,
                            train=TrainConfig(precision=args.precision))
    except (ValueError, ParityError) as e:
        print(f"xfbench parity: {e}", file=sys.stderr)
        return 2
    problems = violations(result)
    result["ok"] = not problems
    print(json.dumps(result) if args.json else format_table(result))
    for p in problems:
        print(f"xfbench parity: FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity")
    p.add_argument("--worker", required=True)
    p.add_argument("--in", dest="in_path", required=True)
    p.add_argument("--out", dest="out_path", required=True)
    p.add_argument("--config", required=True)
    a = p.parse_args(argv)
    worker(a.worker, a.in_path, a.out_path, json.loads(a.config))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
