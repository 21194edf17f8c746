"""Ratios between implementations with a 95% interval across worker processes.

Each step cell runs in R independent worker processes (replicates); each process
gives one median step time (and one compile time). A ratio a/b between two
implementations is exp(d) with d = mean(log a) - mean(log b) over their processes,
and its interval is a Welch t-interval on that log difference:
se = sqrt(var_a/n_a + var_b/n_b), Welch-Satterthwaite degrees of freedom,
exp(d ± t(0.975, df) · se). Over several configurations the ratio is the
geometric mean of the per-configuration ratios, whose log is the mean of the d's,
with the variance terms combined the same way (Satterthwaite over all terms).

Comparisons against the fastest are simultaneous: the fastest is picked from the very
data it is then tested on, so each interval is at level 1 − 0.05/m for the m = k(k−1)/2
pairs of the k implementations compared (Bonferroni over every pair, which covers
whichever one the data picks). Zero spread across processes gives no interval, and a
ratio inside the A/A control's interval (either way round) is within the noise floor.

Standard library only: the t quantile is computed here (regularised incomplete
beta by continued fraction, then bisection), so the report needs no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
METHOD = (
    "Each ratio a/b is exp(d), d = mean(log a) − mean(log b) over the median step (or compile) time of each "
    "worker process, with a Welch t-interval exp(d ± t · se), se = √(var_a/n_a + var_b/n_b) of the logs and "
    "Welch–Satterthwaite df (over several configurations: the geometric mean of the per-configuration ratios, "
    "its variance terms combined the same way). Intervals against the fastest are simultaneous 95% intervals: "
    "the fastest is picked from the same data, so each is at level 1 − 0.05/m for the m = k(k−1)/2 pairs of the "
    "k implementations compared (Bonferroni); the interval of an A/A copy against its original is a plain 95% one."
)
WINNER_RULE = (
    "A winner is named only where every interval against it excludes ×1.00 and no ratio lies inside the interval "
    "of the A/A control (either way round: within the noise floor). Fewer than 2 processes on either side, or "
    "the same value from every process, give no interval and no winner."
)


def simultaneous_level(k: int) -> float:
    """The level of each interval when the fastest of k implementations is compared with the others."""
    pairs = k * (k - 1) // 2
    return 1.0 - (1.0 - LEVEL) / max(pairs, 1)


# --------------------------------------------------------------------------- the t distribution


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 20000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p quantile (0 < p < 1) of Student's t with df degrees of freedom; the normal's beyond 1e5."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df > 1e5:
        return statistics.NormalDist().inv_cdf(p)
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- ratios


@dataclass(frozen=True)
class Ratio:
    """a/b as exp(d), with its interval (lo, hi) at `level` where both sides had at least 2 processes
    and some spread."""

    value: float
    lo: float | None = None
    hi: float | None = None
    df: float | None = None
    n_a: int = 0  # the fewest processes behind side a in any configuration
    n_b: int = 0
    level: float = LEVEL

    def inside(self, noise: "Ratio | None") -> bool:
        """Whether this ratio lies inside `noise`'s interval (an A/A control), either way round."""
        if noise is None or not noise.has_interval:
            return False
        band = max(noise.hi, 1.0 / noise.lo)
        return 1.0 / band <= self.value <= band

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def verdict(self) -> str:
        """"slower" (a takes longer; the interval is above 1), "faster", "no clear difference" or "no interval"."""
        if not self.has_interval:
            return "no interval"
        if self.lo > 1.0:
            return "slower"
        if self.hi < 1.0:
            return "faster"
        return "no clear difference"


def _logs(xs: Sequence[float]) -> list[float]:
    return [math.log(x) for x in xs if x is not None and x > 0]


def log_ratio(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], level: float = LEVEL) -> Ratio | None:
    """The ratio a/b over one or more configurations, each a pair (a's per-process values, b's).

    One pair: the Welch t-interval on the log of the values. Several: the geometric mean of the
    per-pair ratios, log variance (1/K²)·Σ(s²/n), Satterthwaite degrees of freedom over all terms.
    None when some pair has no positive value on a side.
    """
    logs = [(_logs(a), _logs(b)) for a, b in pairs]
    if not logs or any(not la or not lb for la, lb in logs):
        return None
    k = len(logs)
    d = sum(statistics.fmean(la) - statistics.fmean(lb) for la, lb in logs) / k
    n_a, n_b = min(len(la) for la, _ in logs), min(len(lb) for _, lb in logs)
    if min(n_a, n_b) < 2:
        return Ratio(math.exp(d), n_a=n_a, n_b=n_b, level=level)
    terms = [(statistics.variance(xs) / len(xs), len(xs)) for pair in logs for xs in pair]
    var = sum(w for w, _ in terms) / (k * k)
    if var <= 0.0:  # every process gave the same value: no spread to build an interval on, no point either
        return Ratio(math.exp(d), n_a=n_a, n_b=n_b, level=level)
    df = sum(w for w, _ in terms) ** 2 / sum(w * w / (n - 1) for w, n in terms)
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(var)
    return Ratio(math.exp(d), math.exp(d - half), math.exp(d + half), df, n_a, n_b, level)


def geometric_interval(xs: Sequence[float], level: float = LEVEL) -> Ratio | None:
    """The geometric mean of one series of per-process values (a ratio to 1), with a t-interval on
    their logs at `level`; no interval from fewer than 2 values or no spread. None without a value."""
    logs = _logs(xs)
    if not logs:
        return None
    mean = statistics.fmean(logs)
    if len(logs) < 2 or statistics.variance(logs) <= 0.0:
        return Ratio(math.exp(mean), n_a=len(logs), level=level)
    half = t_quantile(0.5 + level / 2.0, len(logs) - 1) * math.sqrt(statistics.variance(logs) / len(logs))
    return Ratio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs) - 1, len(logs), level=level)


def geomean(xs: Sequence[float]) -> float | None:
    """The geometric mean of the positive values in xs, else None."""
    logs = _logs(xs)
    return math.exp(statistics.fmean(logs)) if logs else None
