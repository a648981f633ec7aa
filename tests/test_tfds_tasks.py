"""The TFDS-backed SeqIO tasks (SNLI, MultiNLI, AG News, IMDB, SQuAD) on hand-made
examples written as real TFDS datasets: each under its registered builder's name,
config, version and features, read back by `tfds.load` as a prepared dataset would be."""

import re

import pytest
import tensorflow_datasets as tfds
from gecko_tasks.finetune import NLI_TASK
from test_seqio_tasks import FMT, norm, task_examples

from gecko.data import sources as seqio_sources

TFDS_EXAMPLES = {
    "snli": {"premise": ["a man plays a guitar", "a man plays a guitar", "a man plays a guitar",
                         "a dog runs", "a dog runs"],
             "hypothesis": ["a person makes music", "a man sleeps", "the man is famous",
                            "an animal moves", "the dog is happy"],
             "label": [0, 2, 1, 0, 1]},  # the dog has no contradiction: dropped
    "ag_news_subset": {"title": [f"story {i}" for i in range(6)],
                       "description": [f"{topic} news {i}" for i, topic in
                                       enumerate(["sports"] * 3 + ["business"] * 3)],
                       "label": [1, 1, 1, 2, 2, 2]},
    "squad": {"question": ["who climbs walls", "what is a gecko"], "title": ["Gecko", "Gecko"],
              "context": ["geckos climb walls", "a gecko is a lizard"]},
}
TFDS_EXAMPLES["multi_nli"] = TFDS_EXAMPLES["snli"]
TFDS_EXAMPLES["imdb_reviews"] = {"text": [f"{s} film {i}" for i, s in
                                          enumerate(["great"] * 3 + ["awful"] * 3)],
                                 "label": [1, 1, 1, 0, 0, 0]}


TFDS_SPECS = {"snli": "snli", "multi_nli": "multi_nli", "ag_news_subset": "ag_news_subset",
              "imdb_reviews": "imdb_reviews/plain_text", "squad": "squad/v1.1"}


def _write_tfds(spec: str, rows: list[dict], data_dir) -> None:
  """`rows` as the train split of TFDS dataset `spec` in `data_dir`: the registered
  builder's name, config, version and features, so that `tfds.load` reads them as it
  would the real, prepared dataset."""
  real = tfds.builder(spec, data_dir=str(data_dir))
  config = real.builder_config

  class Written(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = real.name
    VERSION = real.version
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config.name)] if config else []

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=real.info.features)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from enumerate(rows)
  Written(data_dir=str(data_dir), config=config.name if config else None).download_and_prepare()


@pytest.fixture(scope="module")
def tfds_options(tmp_path_factory):
  root = tmp_path_factory.mktemp("tensorflow_datasets")
  for name, columns in TFDS_EXAMPLES.items():
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    if name == "squad":
      rows = [dict(r, id=str(i), answers={"text": [r["context"]], "answer_start": [0]})
              for i, r in enumerate(rows)]
    _write_tfds(TFDS_SPECS[name], rows, root)
  return seqio_sources.DataOptions(tfds_data_dir=str(root))


@pytest.mark.parametrize("name", ["gecko_snli", "gecko_mnli"])
def test_nli_tasks_pair_entailment_with_contradiction(tfds_options, name):
  got = task_examples(name, tfds_options)
  sym = lambda t: norm(FMT.query(t, task=NLI_TASK))  # noqa: E731  symmetric: query format
  assert got == [(sym("a man plays a guitar"), sym("a person makes music"), sym("a man sleeps"))]


def _strip(decoded: str) -> tuple[str, str]:
  """'task : ... | query : text ( id 3 )' -> ('text', '3')."""
  body = decoded.split(" | query : ", 1)[1]
  match = re.fullmatch(r"(.*) \( id (\d+) \)", body)
  assert match, decoded
  return match.group(1), match.group(2)


@pytest.mark.parametrize("name, texts, labels", [
    ("gecko_ag_news", [f"story {i} {t} news {i}" for i, t in
                       enumerate(["sports"] * 3 + ["business"] * 3)], [1, 1, 1, 2, 2, 2]),
    ("gecko_imdb", TFDS_EXAMPLES["imdb_reviews"]["text"], [1, 1, 1, 0, 0, 0]),
])
def test_classification_tasks_use_same_label_positives_and_unique_ids(tfds_options, name, texts,
                                                                      labels):
  label_of = {norm(t): y for t, y in zip(texts, labels)}
  got = task_examples(name, tfds_options)
  assert len(got) == len(texts)
  ids = set()
  for query, positive, negative in got:
    (q, qid), (p, pid), (n, nid) = map(_strip, (query, positive, negative))
    assert qid == pid == nid and qid not in ids  # one id per triple, on all three
    ids.add(qid)
    assert q != p and label_of[q] == label_of[p] and label_of[n] != label_of[q]


def test_squad_prefinetune_task(tfds_options):
  got = task_examples("gecko_pft_squad", tfds_options)
  assert got[0] == (norm(FMT.query("who climbs walls", task="question answering")),
                    norm(FMT.document("geckos climb walls", title="Gecko")))
