"""The dev fields of a selection result (`gecko.experiments.selection.dev_row`): the
means by step, and the per-query scores kept only for a lone scored step."""

from gecko.experiments import selection


def _scored(mean: float) -> dict:
  return {"human_dev@384": mean, "human_dev@256": mean - 0.1,
          "per_query": {"384": {"q1": mean, "q2": mean}, "256": {"q1": 0.0}}}


def test_one_step_keeps_its_per_query_scores():
  row = selection.dev_row({"0": _scored(0.6)})
  assert row["dev_by_step"] == {"0": {"human_dev@384": 0.6, "human_dev@256": 0.6 - 0.1}}
  assert row["human_dev_per_query"] == {"384": {"q1": 0.6, "q2": 0.6}, "256": {"q1": 0.0}}


def test_a_curve_keeps_means_alone():
  row = selection.dev_row({"50": _scored(0.6), "100": _scored(0.7)})
  assert set(row) == {"dev_by_step"}
  assert row["dev_by_step"]["100"] == {"human_dev@384": 0.7, "human_dev@256": 0.7 - 0.1}
  assert all("per_query" not in scores for scores in row["dev_by_step"].values())
