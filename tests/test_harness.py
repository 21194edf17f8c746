"""The harness: worker protocol and failures, and `pytest --benchmark-only` end to end (tiny, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import synthetic_cache

from benchmarks.harness import MAX_OVERHEAD, calls_steps, harness_overhead
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.store import RunFolder
from benchmarks.worker_client import Worker, WorkerError

ROOT = Path(__file__).resolve().parents[1]
STEP_KEYS = {
    "steps_per_call", "step_s_median", "impl", "backend", "device", "batch_size", "image_size", "pool_stride",
    "compile_s", "trace_s", "lower_s", "compile_only_s", "images_per_s", "user_epoch_s", "flops_per_step",
    "flops_xla", "peak_flops", "mfu", "peak_memory_bytes", "recompiles", "stats_unit", "timed_region", "threads",
    "replicate", "replicates", "command", "breakdown", "page_faults_per_step", "kernel_s_per_step", "busy_cores",
    "framework_rss_bytes", "training_rss_bytes", "matmul_rate_method",
}
ACCURACY_KEYS = {"test_accuracy_mean", "test_accuracy_sd", "seeds", "epochs", "protocol", "from_cache"}


def payload(tmp_path, impl="flax", image_size=16, batch_size=8, **train) -> dict:
    return {
        "impl": impl,
        "device": "cpu",
        "spec": ModelSpec(image_size).to_dict(),
        "train": TrainConfig(batch_size=batch_size, **train).to_dict(),
        "seed": 0,
        "data": {"source": "synthetic", "data_dir": None, "image_size": image_size, "protocol": "original",
                 "seed": 0, "cache_dir": str(synthetic_cache.seeded(tmp_path / "cache", image_size))},
    }


def test_worker_measures_a_step(tmp_path):
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        setup = w.call("setup", cell=payload(tmp_path))
        assert setup["device"] == "cpu" and setup["params"] == ModelSpec(16).num_params and setup["timed_region"]
        first = w.call("first_step")
        assert first["first_step_s"] > 0 and first["compile_only_s"] > 0 and first["trace_s"] > 0
        assert len(w.call("warmup", n=2)) == 2
        assert isinstance(w.call("steps", n=2), float)
        fin = w.call("finish", flops=True, user_epoch=True)
        rate = w.call("matmul_rate", device="cpu")
        # the same process moved to another configuration: measured again, but its lifetime memory is not its own
        w.call("setup", cell=payload(tmp_path, image_size=24))
        assert w.call("first_step")["first_step_s"] > 0
        w.call("before_timing")
        w.call("steps", n=2)
        later = w.call("finish")
    assert fin["recompiles"] == 0 == later["recompiles"]
    assert fin["user_epoch_s"] > 0 and fin["peak_memory_bytes"] > 0
    assert fin["user_epoch_steps"] == 1024 // 8 and fin["cells_before_in_process"] == 0  # synthetic: 1,027 train images
    assert later["cells_before_in_process"] == 1 and "user_epoch_s" not in later
    assert later["framework_rss_bytes"] is later["training_rss_bytes"] is later["peak_memory_bytes"] is None
    # one calibration for every run, whatever the implementation: JAX, full float32 (no TF32 on a CPU)
    assert rate["flops"] > 0 and rate["precision"] == "float32" and rate["framework"] == "jax"
    assert rate["method"] == "jax 2048x2048 float32 matmul, precision HIGHEST, best of 10" and "default_flops" not in rate
    # XLA's count agrees with the analytic count of the spec (no input gradient for conv1) within 10%
    assert fin["flops_xla"] == pytest.approx(ModelSpec(16).train_flops(8), rel=0.1)


def test_workers_inherit_the_callers_pythonpath_after_the_tree(tmp_path, monkeypatch):
    """Packages installed into a folder on PYTHONPATH (as gpu_run.sh does with its carried wheels)
    reach the workers; the worker's own source tree still comes first."""
    site = tmp_path / "site"
    (site / "carried_pkg").mkdir(parents=True)
    (site / "carried_pkg" / "__init__.py").write_text("VERSION = '9.9'\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        assert w.env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(site)]
        proc = subprocess.run([sys.executable, "-c", "import carried_pkg, benchmarks; print(carried_pkg.VERSION, "
                               "benchmarks.__file__)"], env=w.env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["9.9", str(ROOT / "benchmarks" / "__init__.py")]


def test_worker_killed_mid_call_is_reported(tmp_path):
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        w.call("setup", cell=payload(tmp_path))
        threading.Timer(1.0, os.kill, (w.proc.pid, signal.SIGKILL)).start()
        with pytest.raises(WorkerError, match="killed by SIGKILL"):
            w.call("steps", n=100_000)


def test_worker_hang_times_out(tmp_path):
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        w.call("setup", cell=payload(tmp_path))
        w.timeout_s = 2
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match="hung"):
            w.call("steps", n=10_000_000)
        assert time.monotonic() - t0 < 30


def test_batch_too_large_for_memory_fails_before_allocating(tmp_path):
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        with pytest.raises(WorkerError, match=r"batch 1000000 at 300x300 needs about .* GiB"):
            w.call("setup", cell=payload(tmp_path, image_size=300, batch_size=1_000_000))


def test_nan_loss_fails_the_accuracy_run(tmp_path):
    from benchmarks.weights import reference_weights_file

    weights = reference_weights_file("origin", ModelSpec(16), 0, tmp_path / "weights", code_key="test")
    with Worker(tmp_path / "w.log", None, timeout_s=120) as w:
        w.call("setup", cell=payload(tmp_path, learning_rate=1e12))
        with pytest.raises(WorkerError, match="non-finite"):
            w.call("train", seed=0, epochs=3, augment=False, initial_weights=str(weights))


# ---------------------------------------------------------------- pytest --benchmark-only end to end


def bench_cmd(tmp_path, *extra) -> list[str]:
    synthetic_cache.seeded(tmp_path / "home" / "cache" / "data")
    return [
        sys.executable, "-m", "pytest", "--benchmark-only", "-q", "-p", "no:cacheprovider",
        "--xf-profile=quick", "--xf-impls=flax", "--xf-image-sizes=16", "--xf-batch-sizes=8", "--xf-source=synthetic",
        f"--xf-home={tmp_path / 'home'}", f"--xf-report={tmp_path / 'index.html'}",
        f"--benchmark-storage=file://{tmp_path / 'storage'}", f"--benchmark-json={tmp_path / 'out.json'}", *extra,
    ]


def run_bench(tmp_path, *extra, timeout=300):
    return subprocess.run(bench_cmd(tmp_path, *extra), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """The second workload's run, started with the module: it runs beside the tests before
    `test_the_second_workload_end_to_end`, which waits for it, so both cores are kept busy."""
    tmp = tmp_path_factory.mktemp("resnet")
    with open(tmp / "stdout", "w") as out, open(tmp / "stderr", "w") as err:
        # flax alone: the others' parity is the contract tests'
        proc = subprocess.Popen(bench_cmd(tmp, "--xf-workloads=resnet"), cwd=ROOT, stdout=out, stderr=err)
    yield tmp, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", autouse=True)
def _start_the_slowest_run_first(request):
    if any(item.name == test_the_second_workload_end_to_end.__name__ for item in request.session.items):
        request.getfixturevalue("resnet_run")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    proc = run_bench(tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc


def test_benchmark_json_has_every_figure(bench_run):
    tmp, _ = bench_run
    out = json.loads((tmp / "out.json").read_text())
    by_kind = {}
    for b in out["benchmarks"]:
        by_kind.setdefault(b["extra_info"]["kind"], []).append(b)
    (step,), (acc,), (parity,) = by_kind["step"], by_kind["accuracy"], by_kind["parity"]
    assert STEP_KEYS <= set(step["extra_info"]), STEP_KEYS - set(step["extra_info"])
    assert step["extra_info"]["recompiles"] == 0
    assert set(step["extra_info"]["breakdown"]) == {"forward_s", "forward_backward_s", "update_s"}
    assert step["extra_info"]["page_faults_per_step"] >= 0 and step["extra_info"]["busy_cores"] > 0
    # pytest-benchmark's own statistics are per step, whatever steps_per_call was
    assert step["extra_info"]["stats_unit"] == "step"
    assert step["extra_info"]["step_s_median"] == pytest.approx(step["stats"]["median"])
    assert 0 < step["extra_info"]["mfu"] < 1
    # the round trip was timed, sized the calls, and an overhead above 2% is flagged, not hidden
    e = step["extra_info"]
    assert 0 < e["round_trip_s"] < step["stats"]["median"] * e["steps_per_call"] / 10
    # each round is one call of n steps, and the saved iterations say n, as pytest-benchmark's convention has it
    assert step["stats"]["iterations"] == e["steps_per_call"] >= 2
    # (a busy machine may add the short-call warning too: only the overhead's own is checked here)
    assert (e["harness_overhead"] > MAX_OVERHEAD) == any("harness overhead" in w for w in e.get("warnings", []))
    assert ACCURACY_KEYS <= set(acc["extra_info"])
    assert 0 <= acc["extra_info"]["test_accuracy_mean"] <= 1 and acc["extra_info"]["from_cache"] is False
    assert parity["extra_info"]["parity"]["impls"]["flax"]["params"] == ModelSpec(16).num_params
    xf = out["machine_info"]["xfbench"]
    assert xf["dataset"]["source"] == "synthetic" and xf["versions"]["jax"] and xf["machine_class"]
    page = (tmp / "index.html").read_text()
    assert len(page) > 10_000 and "Partial run" not in page  # every planned cell has its record, parity's too
    assert list((tmp / "storage").rglob("*.json")), "the run was not saved in pytest-benchmark's storage"


def test_the_automatic_source_is_resolved_per_image_size(tmp_path, monkeypatch):
    """Offline, nothing named: the session's 32 px cells read the embedded real images and its 48 px
    cells the synthetic stand-in; workers are told the resolved source, and every summary keeps the
    automatic choice's reason."""
    from benchmarks.inputs import DataChoice
    from shared_data import sources

    monkeypatch.delenv("XFBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    monkeypatch.setattr(sources, "PROBE_URL", "https://127.0.0.1:9/offline.zip")
    data = DataChoice(source=None, data_dir=None, cache_dir=str(tmp_path / "cache"))
    first = data.prepare(32, "original", log=lambda m: None)
    assert first["source"] == "embedded" and data.kwargs(32, "resplit")["source"] == "embedded"
    resplit = data.prepare(32, "resplit", log=lambda m: None)
    assert resplit["source_reason"] == first["source_reason"] and "ship with the repository" in first["source_reason"]
    assert not os.path.isabs(first["cache_path"]) and "/" not in first["source_detail"].split(" of ")[1]
    other = data.prepare(48, "original", log=lambda m: None)
    assert other["source"] == "synthetic" and "FALLBACK" in other["notice"]
    assert data.kwargs(48, "original")["source"] == "synthetic" and data.source is None


def test_one_steps_per_call_per_configuration():
    """The first cell of a configuration sets n for every implementation and process of it, sized
    for an implementation twice as fast; another configuration gets its own; a resumed one keeps its."""
    from benchmarks.harness import Session
    from benchmarks.profiles import Cell, profile

    session = Session.__new__(Session)  # only the profile and the table are needed here
    session.profile, session.config_steps = profile("default"), {}

    def cell(impl, stride=1, batch=32):
        return Cell("step", impl, "cpu", ModelSpec(64, pool_stride=stride), TrainConfig(batch_size=batch))

    assert session.steps_per_call(cell("keras-tf"), steady_s=0.010, rtt_s=0.0001) == 10  # 50 ms at 5 ms a step
    assert session.steps_per_call(cell("flax"), steady_s=0.030, rtt_s=0.0001) == 10  # the same, whatever its speed
    assert session.steps_per_call(cell("flax", stride=2), steady_s=0.2, rtt_s=0.0001) == 2  # never below 2
    # a slow round trip sizes the call for this cell (1%), not for a faster one: 1.4 ms -> 140 ms of 33 ms steps
    assert session.steps_per_call(cell("keras-tf", batch=128), steady_s=0.033, rtt_s=0.0014) == 5
    session.reuse_steps_per_call(cell("flax", batch=64), 7)
    assert session.steps_per_call(cell("keras-jax", batch=64), steady_s=0.001, rtt_s=0.0005) == 7


def test_calls_are_sized_so_the_round_trip_stays_small():
    assert calls_steps(step_s=0.5, rtt_s=0.001, min_call_s=0.05) == 2  # never one step per round trip
    assert calls_steps(step_s=0.002, rtt_s=0.00001, min_call_s=0.05) == 25  # the 50 ms floor
    assert calls_steps(step_s=0.002, rtt_s=0.002, min_call_s=0.05) == 100  # 200 ms: round trip <= 1%
    # round-paired: the step's own noise cancels, only the round trip remains
    assert harness_overhead([0.11, 0.21, 0.15], [0.10, 0.20, 0.14]) == pytest.approx(0.01 / 0.15)
    with pytest.raises(ValueError):
        harness_overhead([0.1, 0.2], [0.1])


def test_second_run_reuses_accuracy_from_cache(bench_run):
    tmp, _ = bench_run
    proc = run_bench(tmp, "-k", "accuracy")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "reusing its accuracy" in proc.stdout
    acc = [b for b in json.loads((tmp / "out.json").read_text())["benchmarks"] if b["extra_info"]["kind"] == "accuracy"]
    assert acc[0]["extra_info"]["from_cache"] is True


def test_fresh_rerun_gives_bitwise_identical_accuracy(bench_run):
    tmp, _ = bench_run

    def accuracy(out):
        (acc,) = [b for b in json.loads(out.read_text())["benchmarks"] if b["extra_info"]["kind"] == "accuracy"]
        return acc["extra_info"]

    first = accuracy(tmp / "out.json")
    proc = run_bench(tmp, "--xf-fresh", "-k", "accuracy")
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = accuracy(tmp / "out.json")
    assert again["from_cache"] is False
    strip = lambda hist: [[{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in seed] for seed in hist]  # noqa: E731
    assert strip(again["history"]) == strip(first["history"])


def test_of_processes_racing_to_resume_one_run_exactly_one_wins(tmp_path):
    run = RunFolder.create(tmp_path, "r", "quick", {}, ["c"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run.update_meta(pid=gone.pid)  # its process is gone: interrupted
    go = tmp_path / "go"
    claim = ("import os, sys, time; from benchmarks.store import RunFolder; run = RunFolder(sys.argv[1])\n"
             "while not os.path.exists(sys.argv[2]): pass\n"  # all start claiming at once
             "won = run.claim(); print(won, flush=True); time.sleep(2 if won else 0)")
    racers = [subprocess.Popen([sys.executable, "-c", claim, str(run.path), str(go)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1)
    go.touch()
    assert sorted(p.communicate(timeout=60)[0].strip() for p in racers) == ["False"] * 5 + ["True"]
    assert RunFolder(run.path).claim()  # the winner's lock went with its process


def test_kill_9_keeps_finished_cells_and_the_next_run_reuses_them(tmp_path):
    cells_run = ("-k", "not parity")  # the step and the accuracy cell (a parity cell resumes in the deadline's test)
    proc = subprocess.Popen(bench_cmd(tmp_path, *cells_run), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    cells = []
    while not cells and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        cells = list((tmp_path / "home" / "runs").glob("*/cells/step-*.json"))
    assert cells, "no step cell finished in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = RunFolder(cells[0].parents[1])
    assert run.meta()["finished"] is None
    assert run.cells()[cells[0].stem]["status"] == "ok"
    # two runs at once in the same folder: one resumes the interrupted run in place (its run id kept,
    # its finished cell reused), the other starts a run of its own; both finish, neither disturbs the other
    reruns = [subprocess.Popen(bench_cmd(tmp_path, *cells_run, f"--benchmark-json={tmp_path / f'out{i}.json'}"), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outputs = [p.communicate(timeout=400)[0] for p in reruns]
    for p, out in zip(reruns, outputs):
        assert p.returncode == 0, out[-3000:]
    (resumer,) = [out for out in outputs if f"resuming the interrupted run {run.run_id}" in out]
    assert f"reusing what interrupted run {run.run_id} measured" in resumer
    runs = [RunFolder(d) for d in (tmp_path / "home" / "runs").iterdir()]
    assert len(runs) == 2 and all(r.meta()["finished"] for r in runs)
    assert len(run.meta()["resumed"]) == 1 and run.meta()["run_id"] == run.run_id
    assert all(len(r.cells()) == 2 for r in runs)  # step, accuracy
    assert len(list((tmp_path / "storage").rglob("*.json"))) == 2


@pytest.mark.parametrize(
    "option, message",
    [
        ("--xf-profile=huge", "unknown profile 'huge'"),
        ("--xf-impls=flax,pytorch", "--xf-impls: unknown value(s) ['pytorch']"),
        ("--xf-devices=tpu", "--xf-devices: unknown value(s) ['tpu']"),
        ("--xf-batch-sizes=0", "--xf-batch-sizes: '0' is not a list of integers"),
        ("--xf-image-sizes=abc", "--xf-image-sizes: 'abc' is not a list of integers"),
    ],
)
def test_bad_options_are_named(tmp_path, option, message):
    proc = run_bench(tmp_path, option, "--collect-only")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


def test_unwritable_home_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder below a file
    proc = run_bench(tmp_path, f"--xf-home={blocker / 'home'}")
    assert proc.returncode != 0
    assert str(blocker / "home") in proc.stdout + proc.stderr


def test_gpu_scripts_carry_the_locked_versions():
    """The wheels carried to the GPU box are the versions this project resolves everywhere else."""
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)
    prepare = (ROOT / "benchmarks" / "gpu_prepare.sh").read_text()
    for name in ("keras", "namex", "optree", "optax"):
        assert f"{name}=={lock[name]}" in prepare
    # flax: the lock's (the last for Python 3.11) fails on the image's jax 0.11.2; the GPU carries a later one
    assert lock["flax"] == "0.12.8" and "flax==0.12.12" in prepare
    for script in ("gpu_prepare.sh", "gpu_run.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


def test_cell_keys_tell_every_setting_apart():
    """Reuse is keyed on everything that decides a cell's figures (augmentation included)."""
    from types import SimpleNamespace

    from benchmarks.harness import Session
    from benchmarks.profiles import PROFILES, cells

    cfg = SimpleNamespace(getoption=lambda name: {"xf_home": "/tmp/x", "xf_source": "synthetic"}.get(name))
    session = Session(cfg, PROFILES["full"], [], ["flax"], machine={"machine_class": "m"}, code="c")
    session.data_summary = lambda cell: {"fingerprint": cell.protocol}
    matrix = cells(PROFILES["full"], ("flax", "keras-jax"), ("cpu", "gpu"), aa="flax", tuned="flax")
    assert len({session.cell_key(c) for c in matrix}) == len(matrix)


def test_the_tuned_copy_is_its_own_series_with_its_settings(tmp_path, monkeypatch):
    """`--xf-tuned flax`: a copy of flax's step cells, named apart, whose workers get TUNED_ENV (XLA_FLAGS
    after the caller's own); the keys and reproduce commands tell it apart."""
    from benchmarks.inputs import TUNED_ENV
    from benchmarks.profiles import PROFILES, cells

    matrix = [c for c in cells(PROFILES["default"], ("flax", "keras-tf"), ("cpu",), tuned="flax") if c.kind == "step"]
    tuned = [c for c in matrix if c.tuned]
    assert len(tuned) == len(matrix) // 3 and all(c.impl == "flax" and "flax~tuned" in c.id for c in tuned)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    with Worker(tmp_path / "w.log", None, timeout_s=120, env=TUNED_ENV) as w:
        assert w.env["GLIBC_TUNABLES"] == TUNED_ENV["GLIBC_TUNABLES"]
        assert w.env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false " + TUNED_ENV["XLA_FLAGS"]
        assert w.call("hello")["protocol"] >= 3  # the worker starts and answers under those settings
    proc = run_bench(tmp_path, "--xf-tuned=keras-tf", "--collect-only")
    assert proc.returncode != 0 and "the tuned settings are for JAX implementations" in proc.stdout + proc.stderr


def test_reproduce_selects_exactly_its_cell_even_the_aa_copy():
    """The recorded command's -k expression parses (an A/A id's "~" would not) and picks its own cell."""
    from _pytest.mark.expression import Expression

    from benchmarks.record import select_expression
    from benchmarks.profiles import PROFILES, cells

    matrix = [c for c in cells(PROFILES["default"], ("flax", "flax-nnx"), ("cpu",), aa="flax", tuned="flax")
              if c.kind == "step"]
    names = [f"test_step[{c.id}]" for c in matrix]
    for cell in matrix:
        expr = Expression.compile(select_expression(cell.id))
        chosen = [n for n in names if expr.evaluate(lambda ident, n=n: ident in n)]
        own = f"test_step[{cell.id}]"
        # -k matches substrings: replicate 0's id also picks its replicates -r1, -r2 (same command)
        assert own in chosen and all(n.startswith(own.rstrip("]")) for n in chosen), (cell.id, chosen)


def test_each_worker_measures_its_configurations_in_turn_each_first_somewhere():
    """The step order: a worker's (series, replicate) cells consecutive, workers shuffled by the seed,
    and each configuration first in at least one process of every series (its memory figures)."""
    from benchmarks.profiles import PROFILES, aa_series, cells, step_order

    p = PROFILES["default"]
    assert aa_series(p, ["keras-tf", "flax"], None) == "flax" and aa_series(p, ["keras-tf"], None) == "keras-tf"
    assert aa_series(p, ["flax"], "none") is None and aa_series(PROFILES["quick"], ["flax"], None) is None
    matrix = [c for c in cells(p, ("flax", "keras-tf"), ("cpu",), aa="flax") if c.kind == "step"]
    order = step_order(matrix, seed=7)
    assert sorted(order, key=lambda c: c.id) == sorted(matrix, key=lambda c: c.id)
    keys = [c.worker_key for c in order]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys)) == 3 * 3  # three series x three replicates, each one unbroken run
    firsts = {(c.series, c.spec.pool_stride) for i, c in enumerate(order) if i == 0 or keys[i - 1] != c.worker_key}
    assert firsts == {(s, stride) for s in ("flax", "keras-tf", "flax~aa") for stride in (1, 2)}
    assert [c.id for c in step_order(matrix, seed=8)] != [c.id for c in order]


def test_the_gpu_profile_runs_its_tiers_in_order():
    """The `gpu` profile: the headline configuration first (3 processes), then the origin spec at batch 512,
    then batch 32; the processes shuffled within each tier only, accuracy after every tier."""
    from benchmarks.profiles import PROFILES, cells, step_order

    matrix = cells(PROFILES["gpu"], ("flax", "keras-jax", "flax-nnx"), ("gpu",))
    steps = step_order([c for c in matrix if c.kind == "step"], seed=3)
    configs = [(c.spec.pool_stride, c.train.batch_size) for c in steps]
    assert configs == sorted(configs, key=[(2, 256), (1, 512), (2, 32)].index)
    # 3 implementations x processes x precisions: float32 and bf16, but the origin spec in float32 only
    assert configs.count((2, 256)) == 3 * 3 * 2 and configs.count((1, 512)) == 3 * 2 and configs.count((2, 32)) == 3 * 2 * 2
    assert {c.tier for c in steps} == {0, 1, 2} and all(c.kind == "accuracy" for c in matrix[len(steps):])


def test_the_deadline_starts_no_cell_that_would_not_finish(monkeypatch):
    """`--xf-deadline`: a cell is left out (recorded, skipped) when the longest finished cell of its kind,
    scaled up by FLOPs, would not fit in the time left, and so is every cell after it."""
    from types import SimpleNamespace

    from benchmarks import harness
    from benchmarks.harness import Session
    from benchmarks.profiles import PROFILES, cells

    clock = [100.0]
    monkeypatch.setattr(harness.time, "monotonic", lambda: clock[0])
    cfg = SimpleNamespace(getoption=lambda name: {"xf_home": "/tmp/x"}.get(name))
    session = Session(cfg, PROFILES["gpu"], [], ["flax"], machine={"machine_class": "m"}, code="c", deadline=200.0)
    recorded = []
    session.record = lambda cell, info, status="ok", reason=None, stats=None: recorded.append((cell.id, status, reason))
    small, big, other = [c for c in cells(PROFILES["gpu"], ("flax",), ("gpu",))
                         if c.kind == "step" and c.replicate == 0 and c.train.precision == "float32"]
    session.start(small, {})  # nothing finished yet: no estimate, it starts
    session.took.append((small, 30.0))
    clock[0] = 150.0  # 50 s left: the origin spec at batch 512 has 2x the images at ~4x the FLOPs each
    assert session.estimate(big) > 50 and session.estimate(other) == 30.0
    with pytest.raises(pytest.skip.Exception):
        session.start(big, {})
    with pytest.raises(pytest.skip.Exception):  # it would fit, but comes after a cell left out
        session.start(other, {})
    assert [r[:2] for r in recorded] == [(big.id, "skipped"), (other.id, "skipped")]
    assert "about" in recorded[0][2] and big.id in recorded[1][2] and session.left_out == [big.id, other.id]


def test_a_run_cut_by_the_deadline_is_resumed_by_the_next_call(tmp_path):
    """What the deadline leaves out is listed, the run stays unfinished, and the same command again
    continues that run under its run id (as a second GPU call does)."""
    first = run_bench(tmp_path, "--xf-deadline=1")
    assert first.returncode == 0, first.stdout[-3000:]
    (folder,) = (tmp_path / "home" / "runs").iterdir()
    run = RunFolder(folder)
    # a cell's estimate needs a finished cell of its kind, so at most the first cell starts within the second;
    # the accuracy cell (and parity) never do
    left = run.meta()["left_out"]
    assert any(c.startswith("acc-") for c in left) and f"--xf-deadline left out {len(left)} cell(s)" in first.stdout
    assert run.meta()["finished"] is None and {run.cells()[c]["status"] for c in left} == {"skipped"}
    second = run_bench(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resuming the interrupted run {run.run_id}" in second.stdout
    assert run.meta()["finished"] and run.meta()["left_out"] == []
    assert {c["status"] for c in run.cells().values()} == {"ok"} and len(run.cells()) == 3


def test_precision_is_an_axis_that_leaves_float32_as_it_was():
    """bf16 cells are named apart; float32 ids, payloads (the gate's) and reuse keys stay as before the field."""
    from benchmarks.profiles import PROFILES, cells

    assert "precision" not in TrainConfig().to_dict() and TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    assert TrainConfig.from_dict(TrainConfig(precision="bf16").to_dict()).precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of float32, bf16"):
        TrainConfig(precision="fp8")
    steps = [c for c in cells(PROFILES["gpu"], ("flax",), ("gpu",)) if c.kind == "step" and c.replicate == 0]
    assert [c.id for c in steps] == ["step-flax-gpu-s300-p2-b256", "step-flax-gpu-s300-p2-b256-bf16",
                                     "step-flax-gpu-s300-p1-b512", "step-flax-gpu-s300-p2-b32",
                                     "step-flax-gpu-s300-p2-b32-bf16"]


def test_gpu_paths_with_stand_in_devices(monkeypatch):
    """Device names, memory statistics and the precision an MFU is rated at, on GPU-shaped stand-ins."""
    from types import SimpleNamespace

    from benchmarks import peaks
    from benchmarks.harness import mfu_figures
    from benchmarks.profiles import Cell
    from benchmarks.runtimes import jax_runtime

    h200 = SimpleNamespace(platform="gpu", device_kind="NVIDIA H200",
                           memory_stats=lambda: {"peak_bytes_in_use": 5 << 30, "bytes_in_use": 1 << 30})
    monkeypatch.setattr(jax_runtime, "device", lambda kind: h200)
    assert jax_runtime.device_name(h200) == "NVIDIA H200"
    mem = jax_runtime.peak_memory("gpu")
    assert mem["peak_memory_bytes"] == 5 << 30 and mem["device_bytes_in_use"] == 1 << 30
    assert "lifetime" in mem["memory_source"]
    assert peaks.rated_precision("gpu", "float32") == "tf32" and peaks.rated_precision("cpu", "float32") == "float32"
    assert peaks.datasheet_peak("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.5e12  # dense: half the sparse 1,979
    assert peaks.datasheet_peak("NVIDIA H100 PCIe", "bf16") is None  # another part, other figures: not listed
    rate = {"flops": 50e12, "default_flops": 400e12, "bf16_flops": 800e12}
    f32 = Cell("step", "flax", "gpu", ModelSpec(300, pool_stride=2), TrainConfig(batch_size=256))
    bf16 = Cell("step", "flax", "gpu", ModelSpec(300, pool_stride=2), TrainConfig(batch_size=256, precision="bf16"))
    out = mfu_figures(f32, 200e12, rate, "NVIDIA H200")
    assert out["mfu_precision"] == "tf32" and out["mfu"] == pytest.approx(0.5)  # against TF32, never float32's 4.0
    assert out["mfu_datasheet"] == pytest.approx(200e12 / 494.5e12)
    out = mfu_figures(bf16, 200e12, rate, "NVIDIA H200")
    assert out["mfu_precision"] == "bf16" and out["mfu"] == pytest.approx(0.25)
    assert "datasheet_flops" not in mfu_figures(bf16, 1e9, {"flops": 1e10, "bf16_flops": 2e10}, "cpu")


def test_the_report_reads_a_harness_result_from_a_gpu_by_precision(bench_run, tmp_path):
    """A harness-written result relabelled as an H200's, with a bf16 copy of its step cell: one verdict block
    per precision, none comparing across them, and the page renders."""
    import copy

    from reports.build import build_report
    from reports.loading import load
    from reports.verdict import verdict

    tmp, _ = bench_run
    first = sorted((tmp / "storage").rglob("*.json"))[0]  # the fixture's own run (later tests rerun parts of it)
    out = json.loads(first.read_text())
    out["machine_info"]["xfbench"].update(gpus=["NVIDIA H200"], machine_class="x86_64-16c-nvidia-h200")
    step = next(b for b in out["benchmarks"] if b["extra_info"]["kind"] == "step")
    bf16 = copy.deepcopy(step)
    bf16["name"] = bf16["name"].replace("]", "-bf16]")
    bf16["extra_info"]["precision"] = "bf16"
    for key in ("min", "max", "mean", "median", "q1", "q3"):
        bf16["stats"][key] /= 2
    bf16["extra_info"]["step_s_median"] /= 2
    out["benchmarks"].append(bf16)
    for b in out["benchmarks"]:
        b["extra_info"].update(device="NVIDIA H200", device_kind="gpu")
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(out))
    blocks = verdict(load([path], include_published=False))
    by_precision = {b["precision"]: b for b in blocks}
    assert set(by_precision) == {"float32", "bf16"}
    assert by_precision["bf16"]["device_label"] == "NVIDIA H200 · bf16"
    for b in blocks:
        assert all({r["impl"] for r in g["rows"]} == {"flax"} for g in b["speed"])  # one series: nothing to compare
    assert [len(b["speed"]) for b in blocks] == [1, 1]
    page = build_report([path], tmp_path / "index.html", include_published=False).read_text()
    assert "NVIDIA H200 · bf16" in page


# ---------------------------------------------------------------- workloads


def test_a_second_workload_has_its_own_namespace_and_leaves_the_origin_as_it_was():
    from benchmarks import workloads
    from benchmarks.inputs import payload
    from benchmarks.profiles import cells, profile

    p = profile("default")
    origin = cells(p, aa="flax")
    both = cells(p, aa="flax", workload_names=("origin", "resnet"))
    assert [c.id for c in both[:len(origin)]] == [c.id for c in origin]  # the origin's ids, unchanged
    resnet = both[len(origin):]
    assert resnet and all(c.id.startswith("resnet.") and c.workload == "resnet" for c in resnet)
    assert not any(c.aa_copy for c in resnet)  # the A/A control is the origin's: one noise floor per machine
    assert {c.id for c in resnet if c.kind == "step"} >= {"resnet.step-keras-tf-cpu-s64-b32"}
    # the origin's payload names no workload: the gate's baseline worker gets what it always got
    assert "workload" not in payload(origin[0], {}) and payload(resnet[0], {})["workload"] == "resnet"
    gpu = cells(profile("gpu"), workload_names=("resnet",))
    assert {c.train.precision for c in gpu} == {"float32"}  # its implementations run in float32 only
    assert workloads.parse("all") == tuple(workloads.BUILT_IN)
    with pytest.raises(ValueError, match="unknown workload 'vit'.*origin, resnet"):
        workloads.parse("origin,vit")


def test_a_tree_without_workloads_skips_their_cells():
    from benchmarks.worker_client import CellSkipped, Protocol

    old = Protocol(3, ("flax",), ("image_size",), ("batch_size",))  # what a tree from before workloads says
    with pytest.raises(CellSkipped, match="no resnet workload"):
        old.fit({"impl": "flax", "workload": "resnet", "spec": {}, "train": {}})


def test_the_second_workload_end_to_end(resnet_run):
    """Step, accuracy and parity cells of the resnet workload through `pytest --benchmark-only`: ids in its
    namespace, its workload in every record, its own section in the report."""
    tmp_path, proc = resnet_run
    proc.wait(timeout=600)
    assert proc.returncode == 0, (tmp_path / "stdout").read_text()[-3000:] + (tmp_path / "stderr").read_text()[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    ids = {b["extra_info"].get("kind"): b for b in out["benchmarks"]}
    assert set(ids) == {"step", "accuracy", "parity"}
    assert all(b["extra_info"]["workload"] == "resnet" for b in out["benchmarks"])
    parity = ids["parity"]["extra_info"]["parity"]
    assert parity["workload"] == "resnet" and parity["expected_state"] == 672 and parity["impls"]["flax"]["state"] == 672
    step = ids["step"]["extra_info"]
    assert "--xf-workloads=resnet" in step["command"] and f"-k 'resnet.step-{step['impl']}-cpu-s16-b8'" in step["command"]
    html = (tmp_path / "index.html").read_text()
    assert 'id="workload-resnet"' in html and "workload resnet" in html
