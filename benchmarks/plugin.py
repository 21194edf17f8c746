"""pytest plugin of the harness: options, the matrix, machine_info, history, the report.

Registered through the `pytest11` entry point, so its options exist in every pytest run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks import machine, record, registry, workloads
from benchmarks.harness import Session
from benchmarks.inputs import ROOT, DataChoice, code_fingerprint, data_choice
from benchmarks.profiles import (Cell, Profile, aa_series, cells, parity_cell_id, profile, step_order,
                                 step_precisions)
from benchmarks.spec import PRECISIONS, ModelSpec
from benchmarks.store import RunFolder, git_commit, now_iso


def pytest_addoption(parser):
    g = parser.getgroup("xfbench")
    g.addoption("--xf-profile", default="default", help="quick (CI), default (main job) or full (GPUs)")
    g.addoption("--xf-source", default=None, help="data source: tfds, folder, embedded, synthetic or archive (default: auto, per image size)")
    g.addoption("--xf-data-dir", default=None, help="the image folder for --xf-source folder")
    g.addoption("--xf-step-source", default=None, help="data source of the step-time cells (default: as --xf-source)")
    g.addoption("--xf-impls", default=",".join(registry.NAMES), help="comma-separated implementations")
    g.addoption("--xf-devices", default="auto", help="cpu, gpu or cpu,gpu (default: cpu plus any GPU JAX sees)")
    g.addoption("--xf-home", default=os.environ.get("XFBENCH_HOME", ".xfbench"), help="runs and caches")
    g.addoption("--xf-image-sizes", default=None, help="override the profile's step image sizes, e.g. 32,64")
    g.addoption("--xf-batch-sizes", default=None, help="override the profile's batch sizes, e.g. 32,64")
    g.addoption("--xf-epochs", default=None, help="override the profile's accuracy epochs")
    g.addoption("--xf-seeds", default=None, help="override the profile's number of accuracy seeds")
    g.addoption("--xf-augment", default=None, choices=("off", "on", "both"),
                help="override the profile's augmentation setting of the accuracy cells")
    g.addoption("--xf-report", default=None, help="where to write the HTML report (default: reports/index.html)")
    g.addoption("--xf-fresh", action="store_true", help="measure everything again: no reuse of cached cells")
    g.addoption("--xf-replicates", default=None, help="override the profile's worker processes per step cell")
    g.addoption("--xf-aa", default=None, metavar="IMPL",
                help="A/A control: a second, identical copy of IMPL's step cells (the harness's noise floor); "
                     "default: the profile's (default profile: flax); none: no control")
    g.addoption("--xf-tuned", default=None, metavar="IMPL",
                help="add a copy of IMPL's step cells run with the tuned settings (inputs.TUNED_ENV; JAX "
                     "implementations only), ranked with no one: the frameworks' defaults stay the headline")
    g.addoption("--xf-order-seed", default=None, help="seed of the step cells' random order (default: random)")
    g.addoption("--xf-precision", default=None, metavar="float32,bf16",
                help="the step cells' precisions (default: the profile's; float32 except in the gpu profile)")
    g.addoption("--xf-workloads", default=None, metavar="NAMES",
                help="the workloads to measure, comma-separated, or all (default: the profile's; origin except "
                     "in the full profile): " + ", ".join(workloads.all_workloads()))
    g.addoption("--xf-deadline", default=None, metavar="SECONDS",
                help="start no cell that would not finish this many seconds after the session started; "
                     "what is left out is listed, and the next run of the same plan resumes the run")


def _positive_ints(config, name: str, low: int, high: int) -> tuple[int, ...] | None:
    raw = config.getoption(name)
    if raw is None:
        return None
    flag = "--" + name.replace("_", "-")
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not low <= v <= high for v in values):
        raise pytest.UsageError(f"{flag}: {raw!r} is not a list of integers in [{low}, {high}]")
    return values


def _profile(config):
    try:
        p = profile(config.getoption("xf_profile"))
    except ValueError as e:
        raise pytest.UsageError(f"--xf-profile: {e}") from None
    changes, tiers = {}, p.step_tiers  # an option that sets a tier's setting sets it in every tier
    if (sizes := _positive_ints(config, "xf_image_sizes", 8, 1024)) is not None:
        changes.update(image_sizes=sizes, accuracy_image_size=sizes[0])
        tiers = ()
    if (batches := _positive_ints(config, "xf_batch_sizes", 1, 65536)) is not None:
        changes.update(batch_sizes=batches, accuracy_batch_size=batches[0])
        tiers = ()
    if (epochs := _positive_ints(config, "xf_epochs", 1, 1000)) is not None:
        changes.update(epochs=epochs[0])
    if (seeds := _positive_ints(config, "xf_seeds", 1, 100)) is not None:
        changes.update(seeds=tuple(range(seeds[0])))
    if (replicates := _positive_ints(config, "xf_replicates", 1, 50)) is not None:
        changes.update(replicates=replicates[0])
        tiers = tuple(dataclasses.replace(t, replicates=None) for t in tiers)
    if config.getoption("xf_precision") is not None:
        changes.update(precisions=tuple(_option_list(config, "xf_precision", PRECISIONS)))
        tiers = tuple(dataclasses.replace(t, precisions=None) for t in tiers)
    if config.getoption("xf_workloads") is not None:
        try:
            changes.update(workloads=workloads.parse(config.getoption("xf_workloads")))
        except ValueError as e:
            raise pytest.UsageError(f"--xf-workloads: {e}") from None
    augment = config.getoption("xf_augment")
    if augment is not None:
        changes.update(augment={"off": (False,), "on": (True,), "both": (False, True)}[augment])
    return dataclasses.replace(p, step_tiers=tiers, **changes)


def _option_list(config, name: str, allowed) -> list[str]:
    values = [v.strip() for v in config.getoption(name).split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        flag = "--" + name.replace("_", "-")
        raise pytest.UsageError(f"{flag}: unknown value(s) {bad or values}; choose from {', '.join(allowed)}")
    return values


@dataclass
class XfState:
    """Everything this pytest session knows about the matrix, on `config.stash[STATE]`."""

    profile: Profile
    impls: list[str]
    run_id: str
    aa: str | None  # the implementation copied as the A/A control, if any
    tuned: str | None  # the implementation copied with the tuned settings, if any
    order_seed: int  # seed of the step cells' interleaved order
    deadline: float | None = None  # time.monotonic() after which no cell may still run (--xf-deadline)
    devices: list[str] | None = None  # resolved on first use: probing GPUs takes a process
    gpus: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    code: str | None = None
    data: DataChoice | None = None  # checked and prepared once, before any cell; the session reuses it
    session: Session | None = None


STATE = pytest.StashKey[XfState]()


def pytest_configure(config):
    config.addinivalue_line("markers", "xfbench: a cell of the xfbench matrix")
    aa = config.getoption("xf_aa")
    if aa is not None:
        aa = _option_list(config, "xf_aa", (*registry.NAMES, "none"))[0]
    tuned = config.getoption("xf_tuned")
    if tuned is not None:
        tuned = _option_list(config, "xf_tuned", registry.NAMES)[0]
        if registry.entry(tuned).backend != "jax":
            raise pytest.UsageError(f"--xf-tuned={tuned}: the tuned settings are for JAX implementations "
                                    f"(its XLA flag is jaxlib's); choose one of "
                                    f"{', '.join(n for n in registry.NAMES if registry.entry(n).backend == 'jax')}")
    seed = _positive_ints(config, "xf_order_seed", 0, 2**31 - 1)
    deadline = _positive_ints(config, "xf_deadline", 1, 10**7)
    p, impls = _profile(config), _option_list(config, "xf_impls", registry.NAMES)
    state = config.stash[STATE] = XfState(
        p, impls, RunFolder.new_id(), aa_series(p, impls, aa), tuned,
        seed[0] if seed else random.randrange(2**31), deadline=time.monotonic() + deadline[0] if deadline else None,
    )
    if config.getoption("benchmark_only", False) and not config.getoption("benchmark_save", None):
        # every benchmark run is saved with its commit in pytest-benchmark's storage: the history.
        # The run id in the name keeps two runs at once from writing the same file.
        config.option.benchmark_save = f"{(git_commit() or 'nocommit')[:12]}_{state.run_id}"


def _resolved(config) -> XfState:
    """The session state with devices, GPUs, machine info and the code fingerprint filled in."""
    state = config.stash[STATE]
    if state.devices is None:
        wanted = config.getoption("xf_devices")
        state.gpus = machine.probe_gpus() if wanted != "cpu" else []
        devices = ["cpu", "gpu"] if wanted == "auto" else _option_list(config, "xf_devices", ("cpu", "gpu"))
        state.devices = [d for d in devices if d == "cpu" or state.gpus or wanted != "auto"]
        state.machine = machine.info(state.gpus)
        state.code = code_fingerprint()
    return state


def pytest_generate_tests(metafunc):
    if "parity_case" in metafunc.fixturenames:  # per workload: float32, then every other precision a step cell runs at
        p = metafunc.config.stash[STATE].profile
        found = step_precisions(p)
        cases = [(w, x) for w in p.workloads for x in PRECISIONS
                 if (x == "float32" or x in found) and x in workloads.get(w).precisions]
        metafunc.parametrize("parity_case", cases,
                             ids=[x if w == workloads.ORIGIN else f"{w}-{x}" for w, x in cases])
    kinds = {"step_cell": "step", "accuracy_cell": "accuracy"}
    for fixture, kind in kinds.items():
        if fixture in metafunc.fixturenames:
            state = _resolved(metafunc.config)
            matrix = [c for c in cells(state.profile, state.impls, state.devices, state.aa, state.tuned,
                                       state.profile.workloads) if c.kind == kind]
            metafunc.parametrize(fixture, matrix, ids=[c.id for c in matrix])


def pytest_collection_modifyitems(session, config, items):
    """Step cells in a seeded random order of their worker processes, replicates and implementations
    interleaved, each process's configurations in turn (`profiles.step_order`): no process always runs
    first, last or after the same neighbour."""
    state = config.stash.get(STATE, None)
    steps = [i for i, item in enumerate(items) if hasattr(item, "callspec") and "step_cell" in item.callspec.params]
    if state is None or len(steps) < 2:
        return
    by_cell = {items[i].callspec.params["step_cell"]: items[i] for i in steps}
    for i, cell in zip(steps, step_order(list(by_cell), state.order_seed), strict=True):
        items[i] = by_cell[cell]


def pytest_collection_finish(session):
    """A missing or bad explicit data source stops the run here, once, before any cell, as a usage
    error (exit 4), instead of failing every cell with the same DataError. Only a named source (an
    option or XFBENCH_DATA_DIR) can be missing or bad: the automatic default falls back to the
    synthetic stand-in. Every dataset of a named source that the collected cells need is prepared
    as the session will (DataChoice.prepare), so the session's own preparation then reads the cache."""
    config = session.config
    cells_ = [c for item in session.items if (c := _cell_of(item)) is not None]
    if config.option.collectonly or not cells_:
        return
    from shared_data import DataError
    from shared_data.dataset import DATA_DIR_ENV

    named = any(config.getoption(o) is not None for o in ("xf_source", "xf_data_dir")) or bool(os.environ.get(DATA_DIR_ENV))
    step_source = config.getoption("xf_step_source")
    wanted = {}  # (image size, protocol, source or None for the main one)
    for cell in cells_:
        if cell.kind == "step" and step_source is not None:
            wanted[(cell.spec.image_size, cell.protocol, step_source)] = None
        elif named:
            wanted[(cell.spec.image_size, cell.protocol, None)] = None
    if not wanted:
        return
    data = config.stash[STATE].data = data_choice(config)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    say = (lambda m: reporter.write_line(f"[xfbench] {m}")) if reporter is not None else (lambda m: None)
    say(f"checking the data source ({len(wanted)} dataset(s)) before any cell")
    try:
        for size, protocol, source in wanted:
            data.prepare(size, protocol, log=say, source=source)  # the session reuses what this loads
    except DataError as e:
        bench = getattr(config, "_benchmarksession", None)  # the history save set in pytest_configure:
        if bench is not None and getattr(bench, "save", None) == config.option.benchmark_save:
            bench.save = None  # nothing will run, so no "Not saving anything" warning beside the error
        raise pytest.UsageError(f"xfbench: the data source cannot be used: {e}") from None


def _cell_of(item) -> Cell | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("step_cell") or params.get("accuracy_cell")


def _record_id(item, p: Profile) -> str:
    """The id of the record the item writes (a parity item's test id names its workload and precision only)."""
    case = item.callspec.params.get("parity_case")
    return parity_cell_id(p, *case) if case else item.callspec.id


@pytest.fixture(scope="session")
def xf(request):
    config = request.config
    state = _resolved(config)
    session = state.session = Session(config, state.profile, state.gpus, state.impls, state.machine, state.code,
                                      state.data, deadline=state.deadline)
    items = [item for item in request.session.items if hasattr(item, "callspec")]
    for item in items:  # build every data cache up front, so the run records its data at once
        cell = _cell_of(item)
        if cell is not None:
            session.data_summary(cell)
    planned = [_record_id(item, state.profile) for item in items]
    session.run = session.interrupted_run(planned)
    if session.run is not None:  # the same plan, interrupted: continued under its own run id
        session.say(f"resuming the interrupted run {session.run.run_id} (same cells planned)")
    else:
        session.run = RunFolder.create(session.home / "runs", state.run_id, session.profile.name,
                                       _full_machine_info(config), planned)
    cells_ = list(filter(None, map(_cell_of, items)))
    session.resumable = session.interrupted_cells(cells_)
    for cell in cells_:  # a resumed configuration keeps its steps per call
        reused = session.resumable.get(session.cell_key(cell)) if cell.kind == "step" else None
        if reused:
            session.reuse_steps_per_call(cell, reused[1]["extra_info"]["steps_per_call"])
    if session.resumable:
        session.say(f"{len(session.resumable)} finished cell(s) of interrupted runs can be reused if unchanged "
                    f"(whole step configurations only)")
    session.say(f"run {session.run.run_id}: profile {session.profile.name}, devices {state.devices}, "
                f"results in {session.run.path}")
    yield session
    session.close_worker()
    if session.left_out:  # unfinished on purpose: the next run of this plan resumes it, under its run id
        session.say(f"--xf-deadline left out {len(session.left_out)} cell(s), from {session.left_out[0]} on; "
                    f"run the same command again to measure them in this run")
        session.run.update_meta(left_out=session.left_out, machine_info=_full_machine_info(config))
    else:
        session.run.update_meta(finished=now_iso(), left_out=[], machine_info=_full_machine_info(config))


def _machine_info(config) -> dict:
    """Our part of pytest-benchmark's machine_info ("xfbench")."""
    state = config.stash.get(STATE, None)
    info = dict(state.machine) if state else {}
    session = state.session if state else None
    if session is not None:
        # one entry per distinct dataset (the same one may be asked for by source name and by default)
        summaries = list({(d["fingerprint"], d["protocol"]): d for d in session.data.summaries.values()}.values())
        info["datasets"] = summaries
        info["dataset"] = summaries[-1] if summaries else None
        info["profile"] = session.profile.name
        # the spec of the accuracy cells (the profile's main one); step cells may add stride variants
        spec = ModelSpec(session.profile.accuracy_image_size)
        info["spec"], info["spec_is_origin"] = spec.to_dict(), spec.is_origin
        info["step_specs"] = [ModelSpec(s, pool_stride=p).to_dict()
                              for s in session.profile.image_sizes for p in session.profile.pool_strides]
        info["run_id"] = session.run.run_id if session.run else None
        info["impl_order"] = list(session.impls)  # the registry's order, for the report
        info["order_seed"], info["replicates"], info["aa"] = state.order_seed, session.profile.replicates, state.aa
        info["tuned"] = state.tuned
        info["stats_unit"] = record.STATS_UNIT  # step cells' stats are per training step (earlier runs: per call)
        info["matmul_rates"] = session.matmul_rates
    return info


def _full_machine_info(config) -> dict:
    """machine_info as pytest-benchmark writes it, for the run folder."""
    info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    info["xfbench"] = _machine_info(config)
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["xfbench"] = _machine_info(config)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Failed and skipped cells have no pytest-benchmark entry: list them beside the others."""
    state = config.stash.get(STATE, None)
    session = state.session if state else None
    if session is not None:
        output_json["xfbench_cells_not_ok"] = [
            {"id": c["id"], "status": c["status"], "reason": c["reason"]}
            for c in session.run.cells().values()
            if c["status"] != "ok"
        ]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = config.stash.get(STATE, None)
    xf = state.session if state else None
    if xf is None or xf.run is None:  # no benchmark ran, or the session failed before its run folder
        return
    from reports.build import build_report

    out = Path(config.getoption("xf_report") or ROOT / "reports" / "index.html")
    storage = Path(config.getoption("benchmark_storage").removeprefix("file://"))
    try:
        build_report([xf.run.path], out, history_dir=storage)
        xf.say(f"report: {out}")
    except Exception as e:  # noqa: BLE001 -- the measured cells are safe in the run folder; say so
        xf.say(f"could not build the report ({type(e).__name__}: {e}); results are in {xf.run.path}")
