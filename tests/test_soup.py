"""Model soups: parameter averages checked against hand-computed ones, and the command
line over a training run's steps, the soup saved like any model and evaluated."""

import jax
import numpy as np
import pytest
from conftest import TINY_HF_CONFIG, TINY_VOCAB, hf_bert_tensors, write_hf_checkpoint

from gecko import soup as soup_cli
from gecko.data import jsonl
from gecko.models import averaging, embedder


def _tiny(tmp_path, seed, **kwargs):
  tensors = hf_bert_tensors(dict(TINY_HF_CONFIG, vocab_size=len(TINY_VOCAB)), len(TINY_VOCAB),
                            seed=seed)
  directory = write_hf_checkpoint(tmp_path / f"m{seed}", tensors=tensors)
  return embedder.from_huggingface(directory, embed_dim=8, seed=seed, **kwargs)


def test_uniform_and_weighted_soups_are_the_hand_computed_averages(tmp_path):
  a, b = _tiny(tmp_path, 0), _tiny(tmp_path, 1)
  uniform = averaging.average([a, b])
  weighted = averaging.average([a, b], weights=[1, 3])
  for leaf_a, leaf_b, leaf_u, leaf_w in zip(*(jax.tree.leaves(m.params)
                                              for m in (a, b, uniform, weighted))):
    x, y = np.asarray(leaf_a, np.float64), np.asarray(leaf_b, np.float64)
    np.testing.assert_array_equal(leaf_u, ((x + y) / 2).astype(np.float32))
    np.testing.assert_array_equal(leaf_w, (0.25 * x + 0.75 * y).astype(np.float32))
  query = np.asarray(a.params["encoder"]["layer_0"]["attention"]["query"]["kernel"])
  assert not np.array_equal(query, uniform.params["encoder"]["layer_0"]["attention"]["query"]
                            ["kernel"])  # the two models differ, so the soup is neither
  assert averaging.average([a]).params is not a.params  # a soup of one is a copy, equal
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(averaging.average([a]).params),
                                                   jax.tree.leaves(a.params)))


@pytest.mark.parametrize("weights, message", [
    ([1.0], "1 weights for 2 models"),
    ([1.0, -1.0], "weights must be finite, >= 0"),
    ([0.0, 0.0], "not all 0"),
    ([1.0, float("nan")], "weights must be finite"),
])
def test_bad_weights_are_named(tmp_path, weights, message):
  a = _tiny(tmp_path, 0)
  with pytest.raises(ValueError, match=message):
    averaging.average([a, a], weights=weights)


def test_models_of_another_architecture_are_refused(tmp_path):
  with pytest.raises(ValueError, match="model 1 has another architecture"):
    averaging.average([_tiny(tmp_path, 0), _tiny(tmp_path, 1, dims=(4, 8))])
  with pytest.raises(ValueError, match="a soup needs at least one model"):
    averaging.average([])


def test_soup_of_a_runs_steps_is_saved_and_evaluated(tiny_run, tmp_path):
  from gecko import eval as eval_lib
  from gecko import export
  from gecko.evaluation import tasks
  run = tiny_run  # checkpoints 2, 3 and 4; its export is step 4
  assert soup_cli.main(["--model", f"{run}@2", "--model", str(run), "--weights", "3,1",
                        "--output", str(tmp_path / "soup")]) == 0
  step2, _, _ = export.restore_run(str(run), step=2)
  step4 = embedder.load(run / "export")
  made = embedder.load(tmp_path / "soup")
  for got, x, y in zip(*(jax.tree.leaves(m.params) for m in (made, step2, step4))):
    np.testing.assert_array_equal(got, (0.75 * np.asarray(x, np.float64)
                                        + 0.25 * np.asarray(y, np.float64)).astype(np.float32))
  sts = tmp_path / "sts"
  jsonl.write(sts / "test.jsonl", [{"sentence1": "what is 1", "sentence2": "it is 1", "score": 5},
                                   {"sentence1": "what is 2", "sentence2": "no 3", "score": 0},
                                   {"sentence1": "what is 4", "sentence2": "it is 5", "score": 2}])
  results = eval_lib.evaluate(checkpoint=str(tmp_path / "soup"), output_dir=str(tmp_path / "ev"),
                              tasks=[tasks.STSTask(name="S", path=str(sts))])
  # Spearman of the soup's own cosines, by scipy.
  import scipy.stats

  from gecko.encode import encode
  pairs = jsonl.read_objects(str(sts / "test.jsonl"), what="STS")
  a, b = (encode([p[key] for p in pairs], model=str(tmp_path / "soup"))
          for key in ("sentence1", "sentence2"))
  expected = scipy.stats.spearmanr(np.sum(a * b, axis=1), [p["score"] for p in pairs])[0]
  assert results["S"][64]["main_score"] == pytest.approx(expected, abs=1e-9)
  with pytest.raises(ValueError, match="@STEP applies to a training MODEL_DIR"):
    soup_cli.load(f"{tmp_path / 'soup'}@3")
  assert soup_cli.main(["--model", str(run), "--output", str(tmp_path / "one")]) == 2
