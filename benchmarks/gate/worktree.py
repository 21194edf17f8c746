"""Git for the gate: the baseline commit checked out in a temporary worktree."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.gate import GateInputError

ROOT = Path(__file__).resolve().parents[2]
# The core a worker tree must hold. A top-level package it lacks would not fail: the editable
# install would import the working tree's copy instead, and the gate would compare head with itself.
TREE_NEEDS = ("benchmarks/worker.py", "benchmarks/registry.py", "benchmarks/spec.py", "shared_data/__init__.py")


def git(*args, cwd: Path | None = None, check=True) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GateInputError(f"git {' '.join(args)} failed: {e}") from None
    if check and out.returncode != 0:
        raise GateInputError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.rstrip()


def resolve_commit(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except GateInputError:
        raise GateInputError(f"baseline commit {rev!r} is not in this repository (fetch it, or pass --base REV)") from None


def dirty_paths() -> list[str]:
    out = git("status", "--porcelain", "--untracked-files=all")
    return [line[3:] for line in out.splitlines() if line.strip()]


def changed_paths(commit: str) -> list[str]:
    """Files whose content in the working tree (uncommitted and untracked changes included) differs from `commit`."""
    tracked = git("diff", "--name-only", "--no-renames", commit).splitlines()
    untracked = git("ls-files", "--others", "--exclude-standard").splitlines()
    return sorted({p for p in (*tracked, *untracked) if p})


@contextlib.contextmanager
def worktree(commit: str):
    """A detached worktree of `commit` in a temp folder; always removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="xfbench-gate-base-"))
    path = tmp / "tree"
    try:
        git("worktree", "add", "--detach", str(path), commit)
        missing = [p for p in TREE_NEEDS if not (path / p).exists()]
        if missing:
            raise GateInputError(f"baseline commit {commit[:12]} lacks {', '.join(missing)}: it predates the harness; "
                                 f"pass --base REV or update the baseline")
        yield path
    finally:
        git("worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        git("worktree", "prune", check=False)
