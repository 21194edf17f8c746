"""`xfbench gate`: fail when the train step got slower than at a baseline commit.

How it decides (A/B in the same run, as asv's `continuous`):

* The baseline is a commit, nothing more: `--base pin` (the default) reads it from
  `benchmarks/baselines/pin.json`; `--base auto` takes, on a pull request, the merge
  base of HEAD with origin/$GITHUB_BASE_REF, on a push the commit before it
  ($XF_GATE_BEFORE, from the workflow's github.event.before; all zeros for a new
  branch), else the pin; `--base REV` any commit. The gate checks that commit out in a
  temporary `git worktree` and, for each step cell of the quick profile (32x32 origin
  spec, batch 32, cpu), starts two fresh workers: one importing the baseline tree,
  one the working tree (uncommitted changes count). Both run on this machine, so no
  per-machine figure is needed.
* First one short-lived worker per tree says what it speaks (protocol,
  implementations, spec and train fields). A cell whose implementation the
  baseline lacks is skipped and recorded as such; each side gets only the
  payload fields its tree knows.
* After set-up and warm-up it alternates timed blocks of k synchronised steps
  between the two workers -- never both at once -- in pairs whose order is
  drawn at random (a fixed base-then-head order would give one side a
  systematic position effect). Each pair gives r = log(head / base).
* Under H0 "head is no slower than base x (1 + margin)", and with the order
  randomised, r - log(1 + margin) is symmetric about a value <= 0, so the
  one-sided Wilcoxon signed-rank test (exact null distribution) has a known
  false-alarm rate. The margin (default 3%) absorbs small systematic
  differences between two processes running the same code.
* While a cell is timed, its two workers run at raised priority where allowed
  (nice -15): other jobs on a shared machine then interfere less (pair-to-pair
  spread of the log ratio here: ~0.18 -> ~0.12).
* Pairs are taken in looks (at 12, 18, 26, 36, 50, 70, 100 pairs). The cell's
  alpha (0.01 / number of measured cells, Bonferroni) is split over the looks
  (Bonferroni again: half over the interim looks, the rest at the last), so
  stopping early when the evidence is clear keeps the false-alarm rate
  <= alpha. A cell also stops early, as a pass, once the 98% interval of the
  median ratio lies below 1 + margin + 0.05: that only ever lowers the
  false-alarm rate. On a quiet machine a cell takes a dozen pairs; on a loaded
  one more, up to --pairs or its share of the time budget (--budget-s).
* Reported per cell: ratio = median of the pair ratios with a distribution-free
  (order-statistic) 95% interval, confidence = 1 - p.
* As information only, the calibration-normalised step (step seconds x the
  matmul rate measured in the same worker) is compared with the reference figure
  of this machine class (`benchmarks/baselines/<machine class>.json`), where that
  optional file exists; a missing one is a note.

`--results FILE` reads a pytest-benchmark JSON run instead and compares its
calibration-normalised step times with the reference figures; with no pairs
there is no A/B test, so that mode uses a plain threshold (--results-threshold,
default 25%), says so, and needs the reference file.

Exit status: 0 no regression (skipped cells included); 1 a cell regressed, or its
head worker failed (at start, or crashing, hanging or answering nonsense while
timed), with the reason; 2 the gate cannot vouch: bad input (no pin, a corrupt
file, an unknown implementation, git trouble), a baseline commit that cannot be
measured or whose worker failed, or no cell compared (all skipped; --results with
no cell that has a reference figure). The verdict JSON (.xfbench/gate/last.json,
and --json FILE) is written whatever the exit status, with the reason.

`python -m benchmarks.gate.history output.json steps.json` keeps only the per-step
step-time entries of a run, for github-action-benchmark.

Modules, each importing only those before it: `stats` (the decision rule, pure),
`history` (the step-time file for github-action-benchmark), `worktree` (git),
`baseline` (the baseline commit, the reference figures, --results), `ab` (workers
and timing), `cli` (arguments, modes, the verdict).
"""


class GateInputError(Exception):
    """Bad input: exit status 2 with this message."""
