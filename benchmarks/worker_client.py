"""The parent side of a cell's worker process: start it, talk to it, read what it speaks.

`Worker` starts `python -m benchmarks.worker` from a source tree (this checkout,
or another commit's worktree for the gate's A/B runs) and sends one JSON request
per line; every call has a timeout. `speaks()` asks the worker which protocol
version, implementations and spec fields it understands, so a driver can skip
what an older tree lacks and send only fields it knows.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    """The worker failed, crashed or hung; the message says which, for the results."""


class CellSkipped(Exception):
    """The cell cannot run here (e.g. no GPU for this framework)."""


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


@dataclass(frozen=True)
class Protocol:
    """What a worker tree understands."""

    version: int
    impls: tuple[str, ...]
    spec_fields: tuple[str, ...]
    train_fields: tuple[str, ...]
    workloads: tuple[str, ...] = ("origin",)  # trees from before workloads ran the origin alone

    def fit(self, payload: dict) -> dict:
        """The payload cut to the spec and train fields this tree knows. A field it lacks may
        only be dropped at its default value: otherwise it would measure another model."""
        from benchmarks.spec import ModelSpec, TrainConfig

        out = dict(payload)
        if payload.get("workload", "origin") not in self.workloads:
            raise CellSkipped(f"the worker tree has no {payload['workload']} workload")
        if "workload" in payload:  # another workload's spec is its own: not the origin's fields
            return out
        for key, known, default in (("spec", self.spec_fields, ModelSpec().to_dict()),
                                    ("train", self.train_fields, TrainConfig().to_dict())):
            extra = {k: v for k, v in payload[key].items() if k not in known}
            changed = [k for k, v in extra.items() if v != default.get(k)]
            if changed:
                raise CellSkipped(f"the worker tree does not know the {key} field(s) {', '.join(changed)}")
            out[key] = {k: v for k, v in payload[key].items() if k in known}
        return out


# what trees from before the protocol said what it speaks (version 0) understood
LEGACY_DESCRIBE = (
    "import dataclasses, json\n"
    "from benchmarks import registry, spec\n"
    "print(json.dumps({'protocol': 0, 'impls': list(registry.NAMES),\n"
    "  'spec_fields': [f.name for f in dataclasses.fields(spec.ModelSpec)],\n"
    "  'train_fields': [f.name for f in dataclasses.fields(spec.TrainConfig)]}))\n"
)


class Worker:
    """Parent-side handle. Use as a context manager; every call has a timeout."""

    def __init__(self, log_path: Path, keras_backend: str | None, timeout_s: float, on_progress=None,
                 root: Path | None = None, env: dict | None = None):
        """`root`: the source tree the worker imports from (another commit's worktree for A/B runs);
        `env`: settings on top of the worker's environment (XLA_FLAGS after any the caller has)."""
        self.root = Path(root) if root else ROOT
        self.timeout_s = timeout_s
        self.log_path = Path(log_path)
        self.on_progress = on_progress or (lambda msg: None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        # the source tree first, then whatever the caller had (packages carried to a GPU machine, say)
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = dict(worker_env(keras_backend), PYTHONPATH=os.pathsep.join([str(self.root), *inherited]))
        for key, value in (env or {}).items():
            self.env[key] = f"{self.env[key]} {value}" if key == "XLA_FLAGS" and self.env.get(key) else value
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            cwd=self.root,
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
                raise WorkerError(f"worker died ({describe_exit(code)}); log tail:\n{self.log_tail()}")
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

    def speaks(self) -> Protocol:
        """The worker's protocol; a tree from before `hello` existed is described from its source."""
        try:
            said = self.call("hello")
        except WorkerError as e:
            if "AttributeError" not in str(e):
                raise
            out = subprocess.run([sys.executable, "-c", LEGACY_DESCRIBE], env=self.env, cwd=self.root,
                                 capture_output=True, text=True, timeout=self.timeout_s)
            if out.returncode != 0:
                raise WorkerError(f"cannot read what the tree at {self.root} speaks: {out.stderr[-2000:]}") from None
            said = json.loads(out.stdout.strip().splitlines()[-1])
        return Protocol(said["protocol"], tuple(said["impls"]), tuple(said["spec_fields"]), tuple(said["train_fields"]),
                        tuple(said.get("workloads", ("origin",))))


def describe_exit(code: int) -> str:
    if code is None:
        return "still running"
    if code < 0:
        name = signal.Signals(-code).name
        hint = " -- likely out of memory (the kernel's OOM killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"
