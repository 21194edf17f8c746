"""The gate's decision rule: exact one-sided tests on paired log ratios, looked at sequentially.

Pure numerics (numpy and math only): nothing here starts a process or reads a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOOKS = (12, 18, 26, 36, 50, 70, 100)


def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ = w) for w = 0..n(n+1)/2 under H0 (exact, by dynamic programming)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    top = 0
    for k in range(1, n + 1):
        counts[k : top + k + 1] += counts[: top + 1].copy()
        top += k
    return counts / 2.0**n


def signed_rank_p(d) -> float:
    """One-sided exact Wilcoxon signed-rank p-value for H1: d is shifted above 0."""
    d = np.asarray([x for x in d if x != 0.0], dtype=float)
    n = len(d)
    if n == 0:
        return 1.0
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # ties have probability ~0 for timings
    w_plus = int(ranks[d > 0].sum())
    null = _signed_rank_null(n)
    return float(min(1.0, null[w_plus:].sum()))


def median_ci(x, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median from order statistics (binomial)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    if n < 6:
        return float(x[0]), float(x[-1])
    tail = (1 - level) / 2
    cdf = np.cumsum([math.comb(n, i) / 2.0**n for i in range(n + 1)])
    lo = int(np.searchsorted(cdf, tail, side="right"))  # P(B <= lo-1) <= tail
    lo = max(lo - 1, 0)
    return float(x[lo]), float(x[n - 1 - lo])


@dataclass
class Decision:
    n: int
    ratio: float
    ci: tuple[float, float]
    p: float
    regressed: bool
    alpha: float
    margin: float


def decide(log_ratios, margin: float, alpha: float) -> Decision:
    """Is head slower than base x (1 + margin)? One-sided Wilcoxon signed-rank at level alpha."""
    r = np.asarray(log_ratios, dtype=float)
    p = signed_rank_p(r - math.log1p(margin))
    lo, hi = median_ci(r)
    return Decision(len(r), float(math.exp(np.median(r))), (math.exp(lo), math.exp(hi)), p, p <= alpha, alpha, margin)


def looks_upto(max_samples: int) -> list[int]:
    looks = [n for n in LOOKS if n < max_samples] + [max_samples]
    return sorted(set(looks))


def clearly_fine(log_ratios, margin: float) -> bool:
    """The 99% upper bound of the median ratio is below 1 + margin + 5%: no regression worth finding."""
    if len(log_ratios) < LOOKS[0]:
        return False
    _, hi = median_ci(log_ratios, level=0.98)
    return math.exp(hi) < 1 + margin + 0.05


class SequentialTest:
    """One process pair's test of one cell: looks at fixed sample counts, alpha split over them
    (Bonferroni).

    Each interim look may reject at alpha / (2 x number of interim looks); the
    final look -- at max_samples, or earlier when the time budget ends the test --
    gets all the alpha not yet spent (at least alpha / 2). The total over the
    looks never exceeds alpha, so the test's false-alarm rate stays <= alpha
    however it stops (when the two processes carry no offset of their own);
    stopping as a pass ("clearly no regression") only lowers it.

    `add(r)` takes one sample pair's log ratio and returns the stop reason once
    the test is decided, else None; `stop()` ends it early (time budget).
    """

    def __init__(self, alpha: float, margin: float, max_samples: int):
        self.alpha = alpha
        self.margin = margin
        self.max_samples = max_samples
        self.looks = looks_upto(max_samples)
        self.alpha_interim = alpha / (2 * max(1, len(self.looks) - 1))
        self.spent = 0.0
        self.r: list[float] = []
        self._dec: Decision | None = None

    @property
    def alpha_final(self) -> float:
        return self.alpha - self.spent

    def add(self, r: float) -> str | None:
        self.r.append(float(r))
        n = len(self.r)
        if n >= self.max_samples:
            return self.stop("max samples")
        if n not in self.looks:
            return None
        self._dec = decide(self.r, self.margin, self.alpha_interim)
        self.spent += self.alpha_interim
        if self._dec.regressed:
            return "regression evident"
        if clearly_fine(self.r, self.margin):
            return "clearly no regression"
        return None

    def stop(self, reason: str) -> str:
        """The final look: all the alpha left."""
        self._dec = decide(self.r, self.margin, self.alpha_final)
        self.spent = self.alpha
        return reason

    def decision(self) -> Decision:
        if self._dec is None or self._dec.n != len(self.r):
            self.stop("asked")
        return self._dec


# two-sided 95% quantiles of Student's t, by degrees of freedom (the gate runs at most 9 process pairs)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


class ProcessPairs:
    """A cell's verdict over fresh process pairs (an intersection-union test).

    Each pair -- one new base and one new head worker -- gets its own sequential test. The cell
    regressed only when every one of `n` pairs shows the regression on its own; the first pair that
    does not ends the cell as a pass. A process effect (layout, thread placement, the base's other
    tree) shifts one pair's ratio; to raise a false alarm it must shift all n independent pairs the
    same way, so a cell false-alarms at rate q^n, q being one pair's rate on this machine (at most
    the pair's alpha without process effects; `xfbench gate --self-test` measures it). A real
    slowdown of power p per pair is caught at rate p^n.
    """

    def __init__(self, n: int):
        self.n = n
        self.decisions: list[Decision] = []

    def add(self, dec: Decision) -> str | None:
        """One pair's decision; returns "pass" or "regressed" once the cell is decided, else None."""
        self.decisions.append(dec)
        if not dec.regressed:
            return "pass"
        return "regressed" if len(self.decisions) >= self.n else None

    @property
    def regressed(self) -> bool:
        return len(self.decisions) >= self.n and all(d.regressed for d in self.decisions)

    @property
    def p(self) -> float:
        """The intersection-union p-value: the largest of the pairs'."""
        return max(d.p for d in self.decisions)

    def ratio(self) -> tuple[float, tuple[float, float]]:
        """Geometric mean of the pairs' median ratios, with a t-interval across pairs (the process as a
        level of variation); one pair: its own within-pair interval."""
        logs = np.log([d.ratio for d in self.decisions])
        if len(logs) == 1:
            return self.decisions[0].ratio, self.decisions[0].ci
        half = T975[len(logs) - 1] * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
        mean = float(np.mean(logs))
        return math.exp(mean), (math.exp(mean - half), math.exp(mean + half))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a rate k/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
