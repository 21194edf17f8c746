"""Run folders: every finished cell is written at once, atomically.

Layout of `.xfbench/runs/<run_id>/`:
  run.json             run_id, host, pid, started, finished (null while running or if interrupted),
                       profile, commit, machine_info, planned (cell ids)
  cells/<cell_id>.json one finished cell: id, name, kind, status, reason, stats, extra_info
  logs/<worker>.log    a worker process's stderr (step-<series>-<device>-<replicate>: every configuration
                       of one series and replicate; accuracy-<impl>-<device>: every protocol)
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import secrets
import socket
import subprocess
from pathlib import Path

from reports.files import ResultFileError, read_json, write_atomic  # noqa: F401  (re-exported)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _alive(owner: dict) -> bool:
    """Whether the process that `owner` ({"host", "pid"}) names still runs (only knowable on this host)."""
    if owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.cells_dir = self.path / "cells"
        self.logs_dir = self.path / "logs"

    @staticmethod
    def new_id() -> str:
        """Unique even for runs started in the same second: time plus a random token."""
        return f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    @classmethod
    def create(cls, root: Path, run_id: str, profile: str, machine_info: dict, planned: list[str]) -> "RunFolder":
        run = cls(Path(root) / run_id)
        try:
            run.cells_dir.mkdir(parents=True)
            run.logs_dir.mkdir()
        except OSError as e:
            raise OSError(
                f"cannot create the run folder {run.path} ({e.strerror}); "
                f"make {root} writable or set XFBENCH_HOME to a writable folder"
            ) from None
        write_json(
            run.path / "run.json",
            {
                "run_id": run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": now_iso(),
                "finished": None,
                "profile": profile,
                "commit": git_commit(),
                "machine_info": machine_info,
                "planned": planned,
            },
        )
        return run

    @property
    def run_id(self) -> str:
        return self.path.name

    def interrupted(self) -> bool:
        """Unfinished, and its process is gone: not merely still running (on this host)."""
        meta = self.meta()
        return not meta.get("finished") and not _alive(meta)

    def claim(self) -> bool:
        """Take over this interrupted run to resume it: of several processes trying at once, one wins.
        The winner holds an exclusive `flock` on `resume.lock` for the rest of its life; the kernel
        drops it when the process ends, however it ends, so no stale lock is ever left behind."""
        fd = os.open(self.path / "resume.lock", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not self.interrupted():  # another process resumed and finished it before this one got the lock
            os.close(fd)
            return False
        self._resume_lock = fd  # held until this process exits
        self.update_meta(host=socket.gethostname(), pid=os.getpid(), finished=None,
                         resumed=[*self.meta().get("resumed", []), now_iso()])
        return True

    def meta(self) -> dict:
        return read_json(self.path / "run.json")

    def update_meta(self, **changes) -> None:
        meta = self.meta()
        meta.update(changes)
        write_json(self.path / "run.json", meta)

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{safe_name(cell_id)}.json"

    def log_path(self, cell_id: str) -> Path:
        return self.logs_dir / f"{safe_name(cell_id)}.log"

    def write_cell(self, record: dict) -> Path:
        path = self.cell_path(record["id"])
        write_json(path, record)
        return path

    def cells(self) -> dict[str, dict]:
        """Finished cells by id; an unreadable file raises ResultFileError naming it."""
        return {rec["id"]: rec for rec in map(read_json, sorted(self.cells_dir.glob("*.json")))}
