"""`xfbench gate`: fail when the train step got slower than the committed baseline.

How it decides (A/B in the same run, as asv's `continuous`):

* The committed baseline file `benchmarks/baselines/<machine_class>.json` names
  the baseline commit and keeps reference figures per cell. The gate checks
  that commit out in a temporary `git worktree` and, for each step cell of the
  quick profile (32x32 origin spec, batch 32, cpu), starts two fresh workers:
  one importing the baseline tree, one the working tree (uncommitted changes
  count).
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
  matmul rate measured in the same worker) is compared with the baseline
  file's reference figure.

`--results FILE` reads a pytest-benchmark JSON run instead and compares its
calibration-normalised step times with the reference figures; with no pairs
there is no A/B test, so that mode uses a plain threshold (--results-threshold,
default 25%) and says so.

Exit status: 0 no regression (skipped cells included), 1 a cell regressed (a
head worker that crashes counts as regressed), 2 bad input (no or wrong
baseline, corrupt file, unknown implementation, git trouble, a baseline commit
that cannot be measured).

Modules, each importing only those before it: `stats` (the decision rule, pure),
`worktree` (git), `baseline` (the baseline file, reference comparisons), `ab`
(workers and timing), `cli` (arguments, modes, the verdict).
"""


class GateInputError(Exception):
    """Bad input: exit status 2 with this message."""
