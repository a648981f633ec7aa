"""The paired bootstrap over queries, against hand-computed cases."""

import pytest

from gecko.evaluation import bootstrap


def test_a_constant_difference_has_a_point_interval():
  a = {f"q{i}": 0.1 * i for i in range(10)}
  b = {q: v + 0.05 for q, v in a.items()}
  diff = bootstrap.paired(a, b, samples=500)
  assert (diff.mean, diff.low, diff.high) == pytest.approx((0.05, 0.05, 0.05))
  assert diff.significant and diff.queries == 10 and str(diff) == "+0.0500 [+0.0500, +0.0500]"


def test_two_queries_by_hand():
  # Differences (1, 0): a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4,
  # so the 2.5th and 97.5th percentiles are 0 and 1, and zero is inside.
  diff = bootstrap.paired({"x": 0.0, "y": 0.5}, {"x": 1.0, "y": 0.5}, samples=20_000)
  assert diff.mean == 0.5 and (diff.low, diff.high) == (0.0, 1.0) and not diff.significant
  # Swapping the models negates it.
  swapped = bootstrap.paired({"x": 1.0, "y": 0.5}, {"x": 0.0, "y": 0.5}, samples=20_000)
  assert (swapped.mean, swapped.low, swapped.high) == (-0.5, -1.0, 0.0)


def test_seeds_are_averaged_per_query_and_mismatches_named():
  assert bootstrap.mean_over_seeds([{"x": 0.2, "y": 1.0}, {"x": 0.4, "y": 0.0}]) == pytest.approx(
      {"x": 0.3, "y": 0.5})
  with pytest.raises(ValueError, match="runs scored different queries"):
    bootstrap.mean_over_seeds([{"x": 0.2}, {"y": 0.4}])
  with pytest.raises(ValueError, match="scored different queries"):
    bootstrap.paired({"x": 1.0}, {"y": 1.0})
  with pytest.raises(ValueError, match="no queries"):
    bootstrap.paired({}, {})
