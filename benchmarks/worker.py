"""One fresh process per cell, driven over a JSON-lines pipe.

The parent (`Worker`) sends one request per line on the child's stdin; the
child answers on a private copy of its stdout, while its fd 1 is pointed at
stderr so library chatter can never corrupt the channel. stderr goes to the
cell's log file.

Because each cell gets its own interpreter, Keras backends never meet and the
first step compiles cold (persistent compilation caches are switched off).
"""

from __future__ import annotations

import json
import math
import os
import resource
import selectors
import subprocess
import sys
import time
from pathlib import Path

STEP_EVENTS = {
    "trace_s": "/jax/core/compile/jaxpr_trace_duration",
    "lower_s": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile_only_s": "/jax/core/compile/backend_compile_duration",
}


class WorkerError(RuntimeError):
    """The worker failed, crashed or hung; `reason` says which, for the results."""


class CellSkipped(Exception):
    """The cell cannot run here (e.g. no GPU for this framework)."""


# --------------------------------------------------------------------------- parent side


def worker_env(keras_backend: str | None) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        # cold compile figures: no persistent caches
        JAX_ENABLE_COMPILATION_CACHE="false",
        JAX_COMPILATION_CACHE_DIR="",
        # never let one framework take the whole accelerator
        XLA_PYTHON_CLIENT_PREALLOCATE="false",
        TF_FORCE_GPU_ALLOW_GROWTH="true",
    )
    if keras_backend:
        env["KERAS_BACKEND"] = keras_backend
    return env


class Worker:
    """Parent-side handle. Use as a context manager; every call has a timeout."""

    def __init__(self, log_path: Path, keras_backend: str | None, timeout_s: float, on_progress=None, root: Path | None = None):
        """`root`: the source tree the worker imports from (another commit's worktree for A/B runs)."""
        root = Path(root) if root else Path(__file__).resolve().parents[1]
        self.timeout_s = timeout_s
        self.log_path = Path(log_path)
        self.on_progress = on_progress or (lambda msg: None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(worker_env(keras_backend), PYTHONPATH=str(root)),
            cwd=root,
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._sel.close()
        self._log.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _readline(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(timeout=left):
                self.proc.kill()
                self.proc.wait()
                raise WorkerError(f"worker hung: no answer within {self.timeout_s:.0f} s (killed)")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                code = self.proc.wait()
                why = describe_exit(code)
                raise WorkerError(f"worker died ({why}); log tail:\n{self.log_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def call(self, op: str, **args):
        """Send one request and wait for its answer, relaying progress lines."""
        try:
            self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"worker died ({describe_exit(self.proc.wait())}); log tail:\n{self.log_tail()}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = json.loads(self._readline(deadline))
            if "progress" in msg:
                self.on_progress(msg["progress"])
                continue
            if msg.get("skip"):
                raise CellSkipped(msg["skip"])
            if "error" in msg:
                raise WorkerError(msg["error"])
            return msg["result"]


def describe_exit(code: int) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal

        name = signal.Signals(-code).name
        hint = " -- likely out of memory (the kernel's OOM killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


# --------------------------------------------------------------------------- child side


class _Cell:
    """State of the cell inside the worker process."""

    def __init__(self, send):
        self.send = send
        self.events: dict[str, float] = {}
        self.compiles = 0
        self.inner_times: list[float] = []

    def _listen(self):
        import jax.monitoring

        names = {v: k for k, v in STEP_EVENTS.items()}

        def on_duration(event, duration, **kwargs):
            if event in names:
                self.events[names[event]] = self.events.get(names[event], 0.0) + duration
            if event == STEP_EVENTS["compile_only_s"]:
                self.compiles += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)

    # ---- ops

    def setup(self, cell: dict) -> dict:
        from benchmarks import registry
        from benchmarks.spec import ModelSpec, TrainConfig
        from shared_data import epoch_batches, load_dataset

        self.cell = cell
        entry = registry.entry(cell["impl"])
        self.is_jax = entry.backend == "jax"
        try:
            cls = registry.load(cell["impl"])
        except ImportError as e:
            raise _Skip(f"{cell['impl']} cannot run on this machine: {e} (its framework is not installed)")
        if self.is_jax:
            self._listen()
        self.spec = ModelSpec.from_dict(cell["spec"])
        self.train_cfg = TrainConfig.from_dict(cell["train"])
        check_memory(self.spec, self.train_cfg.batch_size, cell["device"], self.is_jax)
        self.data = load_dataset(log=lambda m: print(m, file=sys.stderr), **cell["data"])
        try:
            self.impl = cls(cell["impl"], self.spec, self.train_cfg, seed=cell["seed"], device=cell["device"])
        except RuntimeError as e:
            if cell["device"] != "cpu" and "gpu" in str(e).lower():
                raise _Skip(str(e))
            raise
        self.batch = next(
            epoch_batches(self.data.x_train, self.data.y_train, self.train_cfg.batch_size, seed=cell["seed"], epoch=0)
        )
        self.device_batch = self.impl.to_device(self.batch)
        return {"device": self.impl.device_name(), "params": self.impl.num_params()}

    def first_step(self) -> dict:
        self.events.clear()
        t0 = time.perf_counter()
        self.impl.sync(self.impl.train_step(self.device_batch))
        first = time.perf_counter() - t0
        out = {"first_step_s": first}
        out.update({k: self.events.get(k) if self.is_jax else None for k in STEP_EVENTS})
        return out

    def warmup(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.impl.sync(self.impl.train_step(self.device_batch))
            times.append(time.perf_counter() - t0)
        self._mark()
        return times

    def _mark(self):
        self.inner_times = []
        self.compiles_at_mark = self.compiles
        self.traces_at_mark = self.impl.trace_count()

    def steps(self, n: int) -> float:
        """The timed body: n steps, the last one synchronised (steps chain on the state).
        Its own duration is kept, so the harness's overhead is measured on the same rounds."""
        impl, batch = self.impl, self.device_batch
        t0 = time.perf_counter()
        loss = None
        for _ in range(n):
            loss = impl.train_step(batch)
        loss = impl.sync(loss)
        self.inner_times.append(time.perf_counter() - t0)
        return loss

    def finish(self, loop_steps: int) -> dict:
        recompiles = self.compiles - self.compiles_at_mark
        traces = self.impl.trace_count()
        if traces is not None and self.traces_at_mark is not None:
            recompiles += traces - self.traces_at_mark
        inner = list(self.inner_times)  # the timed calls, as the worker itself saw them
        # an independent minimal loop of the same step, right after
        t0 = time.perf_counter()
        self.steps(loop_steps)
        loop_step_s = (time.perf_counter() - t0) / loop_steps
        flops_xla = self.impl.flops_per_step(self.device_batch)
        out = {
            "recompiles": recompiles,
            "inner_call_s": inner,
            "loop_step_s": loop_step_s,
            "flops_xla": flops_xla,
            "epoch_s": self._epoch_s(),
            "peak_flops": self._peak_flops(),
        }
        out.update(self._memory())
        return out

    def _epoch_s(self) -> float:
        """One epoch end to end: batching, host->device copy and the synchronised steps."""
        from shared_data import epoch_batches

        t0 = time.perf_counter()
        loss = None
        for batch in epoch_batches(
            self.data.x_train, self.data.y_train, self.train_cfg.batch_size, seed=self.cell["seed"], epoch=1
        ):
            loss = self.impl.train_step(self.impl.to_device(batch))
        self.impl.sync(loss)
        return time.perf_counter() - t0

    def _peak_flops(self) -> float:
        """Best float32 matmul rate of this framework on this device, same dtype as the model."""
        n = 1024 if self.cell["device"] == "cpu" else 8192
        if self.is_jax:
            import jax
            import jax.numpy as jnp

            dev = jax.devices(self.cell["device"])[0]
            a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
            mm = jax.jit(lambda x: x @ x)
            run = lambda: mm(a).block_until_ready()  # noqa: E731
        else:
            import tensorflow as tf

            with tf.device("/CPU:0" if self.cell["device"] == "cpu" else "/GPU:0"):
                a = tf.ones((n, n), tf.float32)
            mm = tf.function(lambda x: tf.linalg.matmul(x, x), jit_compile=True)
            run = lambda: mm(a).numpy()  # noqa: E731
        run()
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        return 2 * n**3 / best

    def _memory(self) -> dict:
        if self.is_jax and self.cell["device"] != "cpu":
            import jax

            stats = jax.devices(self.cell["device"])[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return {"peak_memory_bytes": stats["peak_bytes_in_use"], "memory_source": "device peak_bytes_in_use"}
        if not self.is_jax and self.cell["device"] != "cpu":
            import tensorflow as tf

            info = tf.config.experimental.get_memory_info("GPU:0")
            return {"peak_memory_bytes": info["peak"], "memory_source": "device peak (TensorFlow)"}
        return {
            "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_source": "process peak RSS",
        }

    def train(self, seed: int, epochs: int, augment: bool) -> dict:
        from benchmarks import registry
        from benchmarks.training import flax_initial_weights, train

        cls = registry.load(self.cell["impl"])
        impl = cls(self.cell["impl"], self.spec, self.train_cfg, seed=seed, device=self.cell["device"])
        t0, done = time.perf_counter(), 0

        def progress(msg: str) -> None:
            nonlocal done
            done += 1
            eta = (time.perf_counter() - t0) / done * (epochs - done)
            self.send({"progress": f"seed {seed}: {msg} [ETA {eta:.0f} s]"})

        # paired mode: every framework starts from flax's initial weights for this seed
        result = train(
            impl, self.data, self.train_cfg, epochs=epochs, seed=seed, augment=augment, log=progress,
            initial_weights=flax_initial_weights(self.spec, seed),
        )
        return {"history": result["history"], "train_s": result["total_time_s"]}


class _Skip(Exception):
    pass


FRAMEWORK_BYTES = 1 << 30  # what an imported framework and its runtime take besides the model


def check_memory(spec, batch_size: int, device: str, is_jax: bool) -> None:
    """Fail the cell, before allocating anything, when the step cannot fit on the device."""
    need = spec.train_memory_bytes(batch_size)
    if device == "cpu":
        import psutil

        have, what = psutil.virtual_memory().available - FRAMEWORK_BYTES, "available host memory"
    elif is_jax:
        import jax

        stats = jax.devices("gpu")[0].memory_stats() or {}
        have, what = stats.get("bytes_limit"), "GPU memory limit"
    else:
        return  # TensorFlow does not report a GPU's size before allocating
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
