"""The child side of a cell's worker process: `python -m benchmarks.worker`.

It reads one JSON request per line on stdin and answers on a private copy of
its stdout, while its fd 1 is pointed at stderr so library chatter can never
corrupt the channel (stderr goes to the cell's log). The parent side is
`benchmarks.worker_client`. Because each cell gets its own interpreter, Keras
backends never meet and the first step compiles cold.

Ops (protocol 3): hello, matmul_rate, setup, first_step, warmup, before_timing, steps, finish,
breakdown, train, recompile, inject. (Protocol 1's `finish` also measured a matmul rate per worker; 2 measures
it once per run; 3 adds `recompile`, compile time sampled again in one process, and `inject`,
the gate's self-test slowdown.) `setup` may be called again to move the worker to another cell.
Framework specifics go through `benchmarks.runtimes`, chosen by the registry
entry's backend.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import resource
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.runtimes import Runtime

PROTOCOL = 3
FRAMEWORK_BYTES = 1 << 30  # what an imported framework and its runtime take besides the model
IMPORTED = ("jax", "jaxlib", "numpy", "flax", "optax", "keras", "tensorflow")  # versions a worker reports
CALIBRATION = {"cpu": (2048, 10), "gpu": (8192, 20)}  # device -> (matmul side, best of) of the matmul rate


class _Skip(Exception):
    pass


class _Cell:
    """State of the cell inside the worker process."""

    def __init__(self, send):
        self.send = send
        self.inner_times: list[float] = []
        self.extra_work = None  # the self-test's injected slowdown: (one unit of work, units per step)
        self.peak_reset = False  # whether the device's peak count was restarted before the timed steps
        self.setups = 0  # cells this process was set up for: only the first one's memory figures are its own
        self.impl = None

    # ---- ops

    def hello(self) -> dict:
        """What this tree speaks: the parent skips or trims what it does not understand."""
        from benchmarks import registry, workloads
        from benchmarks.spec import ModelSpec, TrainConfig

        return {
            "protocol": PROTOCOL,
            "impls": list(registry.NAMES),
            "workloads": list(workloads.all_workloads()),
            "spec_fields": [f.name for f in dataclasses.fields(ModelSpec)],
            "train_fields": [f.name for f in dataclasses.fields(TrainConfig)],
        }

    def matmul_rate(self, device: str, bf16: bool = False) -> dict:
        """The device's measured matmul rate, by one method for every run (pytest's and the gate's), in a
        process of its own: JAX, an n x n float32 matmul, best of `repeats`, at full float32 precision,
        and also at JAX's default precision where that differs (TF32 on NVIDIA GPUs); with `bf16`, of
        bfloat16 matrices too (the rate bf16 cells are rated against)."""
        from benchmarks.runtimes import jax_runtime

        n, repeats = CALIBRATION[device]
        out = {"flops": jax_runtime.matmul_rate(device, n, repeats, "highest"), "precision": "float32",
               "framework": "jax", "n": n, "repeats": repeats,
               "method": f"jax {n}x{n} float32 matmul, precision HIGHEST, best of {repeats}"}
        if device != "cpu":
            out.update(default_flops=jax_runtime.matmul_rate(device, n, repeats, "default"),
                       default_precision="JAX's default (TF32 on NVIDIA GPUs since Ampere)")
        if bf16:
            out["bf16_flops"] = jax_runtime.matmul_rate(device, n, repeats, "default", "bfloat16")
        return out

    def setup(self, cell: dict) -> dict:
        from benchmarks import registry, runtimes, workloads
        from benchmarks.spec import TrainConfig
        from shared_data import epoch_batches, load_dataset

        self.cell = cell
        self.extra_work = None
        self.impl = self.device_batch = None  # the previous cell's model and buffers go first
        gc.collect()
        self.setups += 1
        entry = registry.entry(cell["impl"])
        workload = workloads.get(cell.get("workload", workloads.ORIGIN))  # the origin's payload names none
        try:
            self.cls = registry.load(cell["impl"], workload.name)
            self.runtime: Runtime = runtimes.for_backend(entry.backend)
        except ImportError as e:
            raise _Skip(f"{cell['impl']} cannot run on this machine: {e} (its framework is not installed)")
        if getattr(self, "events", None) is None:  # once per process, whatever setup follows
            self.runtime.start_up(cell["device"])  # before the listener: none of it is the step's compile
            self.events = self.runtime.CompileEvents()
            self.events.listen()
        self.spec = workload.spec(cell["spec"])
        self.train_cfg = TrainConfig.from_dict(cell["train"])
        check_memory(self.spec, self.train_cfg.batch_size, cell["device"], self.runtime)
        self.data = load_dataset(log=lambda m: print(m, file=sys.stderr), **cell["data"])
        self.rss_before_model = current_rss()  # the framework's footprint: imported, started, data read
        try:
            self.impl = self.cls(cell["impl"], self.spec, self.train_cfg, seed=cell["seed"], device=cell["device"])
        except RuntimeError as e:
            if cell["device"] != "cpu" and "gpu" in str(e).lower():
                raise _Skip(str(e))
            raise
        self.batch = next(
            epoch_batches(self.data.x_train, self.data.y_train, self.train_cfg.batch_size, seed=cell["seed"], epoch=0)
        )
        self.device_batch = self.impl.to_device(self.batch)
        self.impl.prepare(self.device_batch)  # the first step is then its own trace and compile only
        self.rss_after_setup = current_rss()
        return {"device": self.impl.device_name(), "params": self.impl.num_params(),
                "timed_region": self.impl.timed_region, "threads": self.runtime.threads(),
                "platform_version": self.runtime.platform_version(cell["device"]),
                "imported_versions": {name: str(getattr(sys.modules[name], "__version__", None))
                                      for name in IMPORTED if name in sys.modules}}

    def first_step(self) -> dict:
        self.events.clear()
        t0 = time.perf_counter()
        self.impl.sync(self.impl.train_step(self.device_batch))
        out = {"first_step_s": time.perf_counter() - t0}
        out.update(self.events.split())
        return out

    def recompile(self, n: int) -> dict:
        """Compile time sampled n more times: the compiled step dropped, then its first call minus
        the steady call right after it; `compiles` counts the compiles (or traces) that did happen."""
        def seen() -> int:
            return self.events.compiles + (self.impl.trace_count() or 0)

        before, out = seen(), []
        for _ in range(n):
            self.impl.forget_compiled()
            first = self.first_step()["first_step_s"]
            t0 = time.perf_counter()
            self.impl.sync(self.impl.train_step(self.device_batch))
            out.append(first - (time.perf_counter() - t0))
        return {"compile_s": out, "compiles": seen() - before}

    def inject(self, fraction: float, steps: int = 1) -> dict:
        """The gate's self-test: from now on every timed block also does real extra compute (float64
        sines on the host, single-threaded, after the block's sync), `fraction` of a steady step's
        time per step in it. The size is refitted from blocks of `steps` steps run with and without
        it, alternately: between steps the work costs more than alone, never less."""
        import functools

        import numpy as np

        def blocks(per_step: int) -> tuple[float, float]:
            """Median seconds per step of plain blocks and of blocks with the work, interleaved."""
            plain, burned = [], []
            for _ in range(9):
                for work, out in ((0, plain), (per_step, burned)):
                    self.extra_work = (unit, work) if work else None
                    t0 = time.perf_counter()
                    self.impl.sync(self.impl.run_steps(self.device_batch, steps))
                    self._burn(steps)
                    out.append((time.perf_counter() - t0) / steps)
            return float(np.median(plain)), float(np.median(burned))

        unit = functools.partial(np.sin, np.random.default_rng(0).standard_normal(1 << 14))
        t0 = time.perf_counter()
        for _ in range(50):
            unit()
        alone = (time.perf_counter() - t0) / 50
        plain, _ = blocks(0)
        per_step = max(1, round(fraction * plain / alone))
        for _ in range(2):
            plain, burned = blocks(per_step)
            per_step = max(1, round(fraction * plain / max((burned - plain) / per_step, alone)))
        plain, burned = blocks(per_step)
        self.extra_work = (unit, per_step)
        return {"step_s": plain, "work_units_per_step": per_step, "injected_fraction": burned / plain - 1}

    def _burn(self, steps: int) -> None:
        """The injected work of `steps` steps (nothing is imported or built here: it runs while timed)."""
        if self.extra_work:
            unit, per_step = self.extra_work
            for _ in range(steps * per_step):
                unit()

    def warmup(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.impl.sync(self.impl.run_steps(self.device_batch, 1))
            times.append(time.perf_counter() - t0)
        self._mark()
        return times

    def before_timing(self) -> None:
        """Once, after the warm-up calls: what the framework's loop does once before its steps (Keras
        resets its metrics) and the device's peak-memory count restarted where the framework can.
        An op of its own, so that none of it counts as the pipe's round trip of a warm-up call."""
        self.impl.before_timing()
        self.peak_reset = self.runtime.reset_peak_memory(self.cell["device"])
        self._mark()

    def _mark(self):
        self.inner_times = []
        self.steps_timed = 0
        self.usage_at_mark = resource.getrusage(resource.RUSAGE_SELF)
        self.compiles_at_mark = self.events.compiles
        self.traces_at_mark = self.impl.trace_count()

    def steps(self, n: int) -> float:
        """The timed body: n steps as the framework's loop runs them, the last one synchronised.
        Its own duration is kept, so the harness's overhead is measured on the same rounds."""
        t0 = time.perf_counter()
        loss = self.impl.sync(self.impl.run_steps(self.device_batch, n))
        self._burn(n)
        self.inner_times.append(time.perf_counter() - t0)
        self.steps_timed += n
        return loss

    def finish(self, flops: bool = False, user_epoch: bool = False) -> dict:
        """Figures of the timed steps, read right after them; with `flops`, XLA's FLOP count (once per
        configuration); with `user_epoch`, the epoch as users run it. Memory figures that span the
        process's life are the cell's own only in the process's first cell: later ones are None."""
        recompiles = self.events.compiles - self.compiles_at_mark
        traces = self.impl.trace_count()
        if traces is not None and self.traces_at_mark is not None:
            recompiles += traces - self.traces_at_mark
        rss = current_rss()
        out = {"recompiles": recompiles, "inner_call_s": list(self.inner_times), **self._usage_per_step(),
               **self.runtime.peak_memory(self.cell["device"]), "peak_spans_timed_steps_only": self.peak_reset,
               "rss_growth_bytes": rss - self.rss_after_setup,  # during the timed steps: about 0
               "framework_rss_bytes": self.rss_before_model,  # imports, runtime start-up, data
               "training_rss_bytes": rss - self.rss_before_model,  # model, optimizer, compiled step, buffers
               "cells_before_in_process": self.setups - 1}
        if self.setups > 1:  # an earlier cell's model, compiles and freed memory are in these
            out.update(framework_rss_bytes=None, training_rss_bytes=None)
            if not self.peak_reset:
                out["peak_memory_bytes"] = None
        if flops:
            out["flops_xla"] = self.impl.flops_per_step(self.device_batch)
        if user_epoch:
            out.update(self._user_epoch())
        return out

    def _usage_per_step(self) -> dict:
        """What the timed steps cost the process beyond wall time, per step (getrusage): minor page faults
        (memory touched for the first time), kernel CPU seconds, and the cores kept busy on average."""
        now, then = resource.getrusage(resource.RUSAGE_SELF), self.usage_at_mark
        n, wall = max(self.steps_timed, 1), sum(self.inner_times)
        cpu = now.ru_utime - then.ru_utime + now.ru_stime - then.ru_stime
        return {"page_faults_per_step": (now.ru_minflt - then.ru_minflt) / n,
                "kernel_s_per_step": (now.ru_stime - then.ru_stime) / n,
                "busy_cores": cpu / wall if wall > 0 else None}

    def breakdown(self, repeats: int) -> dict:
        """The step taken apart (`Implementation.phases`): each phase compiled by a first call, then
        the median of `repeats` calls, each waited for. Runs after the timed steps."""
        import statistics

        out = {}
        for name, call in self.impl.phases(self.device_batch).items():
            self.runtime.block(call())
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                self.runtime.block(call())
                times.append(time.perf_counter() - t0)
            out[f"{name}_s"] = statistics.median(times)
        return out

    def _user_epoch(self) -> dict:
        """An epoch as the framework's users run it, from host memory, timed after a two-batch
        warm-up of the same loop (which compiles whatever that loop compiles). Whole batches only:
        a ragged last batch would recompile, so it is the same drop-last epoch for every framework."""
        bs = self.train_cfg.batch_size
        n = len(self.data.y_train) // bs * bs
        if not n:
            return {}
        x, y = self.data.x_train[:n], self.data.y_train[:n]
        self.impl.fit_epoch(x[:2 * bs], y[:2 * bs], bs)  # compiles what that loop compiles
        t0 = time.perf_counter()
        self.impl.fit_epoch(x, y, bs)
        took = time.perf_counter() - t0
        return {"user_epoch_s": took, "user_epoch_steps": n // bs, "user_images_per_s": n / took,
                "user_loop": self.impl.user_loop}

    def train(self, seed: int, epochs: int, augment: bool, initial_weights: str) -> dict:
        """Paired training: start from the reference's weights (a .npz the parent made)."""
        import numpy as np

        from benchmarks.training import train

        impl = self.cls(self.cell["impl"], self.spec, self.train_cfg, seed=seed, device=self.cell["device"])
        with np.load(initial_weights) as f:
            weights = {k: f[k] for k in f.files}
        t0, done = time.perf_counter(), 0

        def progress(msg: str) -> None:
            nonlocal done
            done += 1
            eta = (time.perf_counter() - t0) / done * (epochs - done)
            self.send({"progress": f"seed {seed}: {msg} [ETA {eta:.0f} s]"})

        result = train(impl, self.data, self.train_cfg, epochs=epochs, seed=seed, augment=augment, log=progress,
                       initial_weights=weights)
        return {"history": result["history"], "train_s": result["total_time_s"]}


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def check_memory(spec, batch_size: int, device: str, runtime: Runtime) -> None:
    """Fail the cell, before allocating anything, when the step cannot fit on the device."""
    need = spec.train_memory_bytes(batch_size)
    if device == "cpu":
        import psutil

        have, what = psutil.virtual_memory().available - FRAMEWORK_BYTES, "available host memory"
    else:
        have, what = runtime.memory_limit_bytes(device), "GPU memory limit"
    if have is not None and need > have:
        gib = 1 << 30
        raise MemoryError(
            f"batch {batch_size} at {spec.image_size}x{spec.image_size} needs about {need / gib:.1f} GiB, "
            f"but the {what} on {device} is {max(have, 0) / gib:.1f} GiB; lower the batch or image size"
        )


def main() -> None:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(msg):
        channel.write(json.dumps(msg, default=float) + "\n")

    cell = _Cell(send)
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            send({"result": getattr(cell, op)(**req)})
        except _Skip as e:
            send({"skip": str(e)})
        except MemoryError as e:
            send({"error": f"{op}: out of memory: {e or 'MemoryError'}; lower the batch or image size"})
        except Exception as e:  # noqa: BLE001 -- every failure is reported to the parent, by name
            import traceback

            traceback.print_exc()
            send({"error": f"{op}: {type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
