"""Summaries of a metric over seeds: mean, standard deviation, Student-t intervals, Welch's test.

The Student-t distribution is written out (regularized incomplete beta by its
continued fraction) so that comparing runs needs nothing beyond the standard
library; tests hold it to table values and to scipy where it is installed.
"""

import math

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
  """The continued fraction of I_x(a, b), by the modified Lentz method."""
  c = 1.0
  d = 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > _TINY else _TINY)
  f = d
  for m in range(1, 10_000):
    for num in (
      m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
    ):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > _TINY else _TINY)
      c = 1.0 + num / c
      c = c if abs(c) > _TINY else _TINY
      f *= c * d
    if abs(c * d - 1.0) < _EPS:
      break
  return f


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
  if x <= 0.0 or x >= 1.0:
    return 0.0 if x <= 0.0 else 1.0
  log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
  log_front += a * math.log(x) + b * math.log1p(-x)
  if x < (a + 1.0) / (a + b + 2.0):  # Where the fraction converges fast; else by symmetry.
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
  """P(|T| >= |t|) for Student's t with `df` (any positive real) degrees of freedom."""
  if math.isinf(t):
    return 0.0
  return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` degrees of freedom."""
  tail = 0.5 * t_sf2(t, df)
  return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
  """The t with P(T <= t) = p, by bisection on t_cdf (p in (0, 1))."""
  if not 0.0 < p < 1.0:
    raise ValueError(f"p={p} is outside (0, 1)")
  if p < 0.5:
    return -t_ppf(1.0 - p, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < p:
    lo, hi = hi, hi * 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    if hi - lo <= 1e-13 * max(1.0, hi):
      break
  return 0.5 * (lo + hi)


def mean(values) -> float:
  return math.fsum(values) / len(values)


def std(values) -> float | None:
  """Sample standard deviation (n - 1 in the denominator); None for fewer than 2 values."""
  if len(values) < 2:
    return None
  m = mean(values)
  return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize(values, confidence: float = 0.95) -> dict:
  """n, mean, std, the t interval of the mean at `confidence` (None below 2 values), min, max."""
  values = [float(v) for v in values]
  n, m, s = len(values), mean(values), std(values)
  ci = None
  if s is not None:
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * s / math.sqrt(n)
    ci = [m - half, m + half]
  return {"n": n, "mean": m, "std": s, "ci95": ci, "min": min(values), "max": max(values)}


def welch(a, b, confidence: float = 0.95) -> dict | None:
  """Welch's unequal-variance t-test of mean(a) - mean(b).

  Returns {'diff', 'ci95', 't', 'df', 'p'} (p two-sided), or None when either
  side has fewer than 2 values or both have zero variance.
  """
  if len(a) < 2 or len(b) < 2:
    return None
  va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
  se2 = va + vb
  if se2 == 0.0:
    return None
  diff = mean(a) - mean(b)
  se = math.sqrt(se2)
  df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite.
  half = t_ppf(0.5 + confidence / 2.0, df) * se
  t = diff / se
  return {"diff": diff, "ci95": [diff - half, diff + half], "t": t, "df": df, "p": t_sf2(t, df)}
