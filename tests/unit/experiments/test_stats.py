"""The Student-t distribution, intervals and Welch's test against closed forms and tables."""

import math

import numpy as np
import pytest

from lm_jax.experiments import stats


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 100.0])
def test_t_cdf_equals_closed_forms(t):
  # One degree of freedom is the Cauchy distribution; two have an algebraic CDF.
  assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
  assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


@pytest.mark.parametrize(
  "p, df, table",
  [
    (0.975, 1, 12.706204736),
    (0.975, 2, 4.302652730),
    (0.975, 4, 2.776445105),
    (0.975, 10, 2.228138852),
    (0.975, 30, 2.042272456),
    (0.95, 5, 2.015048373),
    (0.995, 3, 5.840909310),
    (0.025, 10, -2.228138852),
  ],
)
def test_t_quantiles_match_the_table(p, df, table):
  assert stats.t_ppf(p, df) == pytest.approx(table, abs=1e-8)
  assert stats.t_cdf(stats.t_ppf(p, df), df) == pytest.approx(p, abs=1e-12)


def test_incomplete_beta_special_cases():
  for x in (0.0, 0.1, 0.5, 0.93, 1.0):
    assert stats.betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
    assert stats.betainc(3.5, 1, x) == pytest.approx(x**3.5, abs=1e-14)
    assert stats.betainc(2, 5, x) + stats.betainc(5, 2, 1 - x) == pytest.approx(1, abs=1e-14)


def test_summary_by_hand():
  s = stats.summarize([1.0, 2.0, 3.0, 4.0])
  sd = math.sqrt(5 / 3)  # Squared deviations 2.25 + 0.25 + 0.25 + 2.25 over n - 1 = 3.
  half = 3.182446305 * sd / 2  # t(0.975, 3) * sd / sqrt(4).
  assert (s["n"], s["mean"], s["min"], s["max"]) == (4, 2.5, 1.0, 4.0)
  assert s["std"] == pytest.approx(sd, rel=1e-14)
  assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-8)
  one = stats.summarize([1.5])
  assert (one["mean"], one["std"], one["ci95"]) == (1.5, None, None)


def test_welch_by_hand():
  a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
  va, vb = (5 / 3) / 4, 10.0 / 5  # Sample variance over n, each side.
  df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
  r = stats.welch(a, b)
  assert r["diff"] == -3.5
  assert r["t"] == pytest.approx(-3.5 / math.sqrt(va + vb), rel=1e-14)
  assert r["df"] == pytest.approx(df, rel=1e-14)
  assert r["p"] == pytest.approx(2 * stats.t_cdf(r["t"], df), rel=1e-12)
  assert r["p"] == pytest.approx(0.0691336, abs=1e-7)  # scipy: ttest_ind(equal_var=False).
  half = stats.t_ppf(0.975, df) * math.sqrt(va + vb)
  assert r["ci95"] == pytest.approx([-3.5 - half, -3.5 + half], rel=1e-12)
  assert stats.welch([1.0], b) is None and stats.welch([1.0, 1.0], [2.0, 2.0]) is None


def test_against_scipy():
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  for df in (1, 1.5, 3, 7.25, 40, 500):
    for t in rng.normal(scale=4, size=5):
      assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-12)
    for p in (0.6, 0.9, 0.975, 0.999):
      assert stats.t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10)
  for n, m in ((3, 3), (3, 5), (10, 4)):
    a, b = rng.normal(1.9, 0.02, n), rng.normal(1.88, 0.05, m)
    ours = stats.welch(list(a), list(b))
    theirs = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert ours["t"] == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours["p"] == pytest.approx(theirs.pvalue, rel=1e-9)
    ci = theirs.confidence_interval(0.95)
    assert ours["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-9)
