"""`xfbench gate`: fail when the train step or its compile got slower than at a baseline commit.

How it decides (A/B in the same run, as asv's `continuous`):

* The baseline is a commit, nothing more: `--base pin` reads it from
  `benchmarks/baselines/pin.json`; `--base auto` takes, on a pull request, the merge
  base of HEAD with origin/$GITHUB_BASE_REF, on a push the commit before it
  ($XF_GATE_BEFORE, from the workflow's github.event.before; all zeros for a new
  branch), else the pin, else HEAD; `--base REV` any commit. With no --base: the pin
  where the file exists, else auto. The gate checks that commit out in a temporary
  `git worktree`; each worker imports one tree, the baseline's or the working tree
  (uncommitted changes count). Both run on this machine, so no per-machine figure is
  needed. The base runs its own worker code: what it cannot speak (an implementation,
  a spec field, compile sampling before worker protocol 3) is skipped, not guessed.
* Cells, per implementation (`--impls`, or `changed`: those whose package or the
  harness code their workers run differs from the base), at 32 px, batch 32, cpu:
  compile time (stride 1) and step time at pool strides 1 and 2 (`--strides`,
  `--metrics`).
* Process pairs. A process carries effects that last its lifetime (memory layout,
  thread placement), so one base and one head worker per cell would take such an
  offset for a slowdown. Each implementation is measured by
  fresh pairs of workers, one base and one head; a pair measures every cell still
  open -- compile time first, then step time at each stride, moving its workers
  to the next spec -- and is closed. A cell regressed only when each of
  `--process-pairs` pairs (default 3) shows it on its own; the first pair that
  does not ends the cell as a pass (an intersection-union test: its p-value is the
  largest of the pairs'). With a false-alarm rate q per pair on this machine (at
  most the pair's alpha when processes have no effect, more when they do), a cell
  false-alarms at about q^3; with power p per pair it catches a slowdown at p^3.
  That holds for offsets each process draws anew; one shared by every pair (the
  base tree's own paths, say) is not divided by three: the margin absorbs it, and
  the self-test, which runs its base from a worktree as the gate does, measures it. The
  ratio reported is the geometric mean over the pairs, with a t-interval across
  them (the process as the unit of replication); one pair: its own interval.
* Within a pair, after set-up and warm-up, it alternates samples between the two
  workers -- never both at once -- in pairs whose order is drawn at random: timed
  blocks of k synchronised steps (about --block-s each), or, for compile time, the
  compiled step dropped in each worker and its first step minus a steady one
  (`recompile`). Each sample pair gives r = log(head / base). Under H0 "head is no
  slower than base x (1 + margin)", with the order randomised, r - log(1 + margin)
  is symmetric about a value <= 0, so the one-sided Wilcoxon signed-rank test
  (exact null distribution) has a known false-alarm rate. The margin (3% for steps,
  5% for compile time) absorbs small systematic differences.
* While a pair is timed, its two workers run at raised priority where allowed
  (nice -15): other jobs on a shared machine then interfere less.
* Step samples are taken in looks (at 12, 18, 26, 36, 50, 70 samples, --samples). The
  pair's alpha (--alpha, 0.01) is split over the looks (Bonferroni: half over the
  interim looks, the rest at the last), so stopping early when the evidence is
  clear keeps its false-alarm rate <= alpha. A pair also stops early, as "no
  regression", once the 98% interval of the median ratio lies below 1 + margin +
  0.05: that only ever lowers the false-alarm rate. Compile time: --compile-samples
  (8) samples, one look.
* `--self-test` runs the working tree against itself, and in each of --trials fresh
  pairs first tests the flax stride-1 step as is (A/A), then with each --slowdown
  injected into the head worker (real extra compute in every timed block, `inject`),
  and prints per slowdown the pairs' detection rate and the cell's power (p^3), and
  the A/A false alarms (q and q^3), each with a Wilson 95% interval: whether this
  machine is quiet enough for the gate to be trusted.
* As information only, the calibration-normalised step (step seconds x the
  matmul rate measured in the same worker) is compared with the reference figure
  of this machine class (`benchmarks/baselines/<machine class>.json`), where that
  optional file exists; a missing one is a note.

`--results FILE` reads a pytest-benchmark JSON run instead and compares its
calibration-normalised step times with the reference figures; with no pairs
there is no A/B test, so that mode uses a plain threshold (--results-threshold,
default 25%), says so, and needs the reference file.

Exit status: 0 no regression (skipped cells included; nothing to gate under
`--impls changed`); 1 a cell regressed, or its head worker failed (at start, or
crashing, hanging or answering nonsense while measured), with the reason; 2 the
gate cannot vouch: bad input (a corrupt pin, an unknown implementation, git
trouble), a baseline commit that cannot be measured or whose worker failed, or no
cell compared (all skipped; --results with no cell that has a reference figure).
The verdict JSON (.xfbench/gate/last.json, and --json FILE) is written whatever the
exit status, with the reason.

`python -m benchmarks.gate.history output.json steps.json` keeps only the per-step
step-time entries of a run, for github-action-benchmark.

Modules, each importing only those before it: `stats` (the decision rules, pure),
`history` (the step-time file for github-action-benchmark), `worktree` (git),
`baseline` (the baseline commit, the reference figures, --results), `ab` (workers,
process pairs and timing), `selftest` (--self-test), `cli` (arguments, modes, the
verdict).
"""


class GateInputError(Exception):
    """Bad input: exit status 2 with this message."""
