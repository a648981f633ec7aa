"""Mixtures and their default rates. Rates are read when a pipeline is built, so a run
overrides them by task name (`SeqioBatches.rates = {'gecko_snli': 0.0}`); 0 drops a task.

The paper gives no rates; the defaults weight FRet and the human-annotated families
evenly-ish and leave opt-in sources (TFDS SQuAD, MIRACL, STS-B) at 0.
"""

import seqio
from gecko_tasks import finetune

from gecko.data.sources import rate

PREFINETUNE = {"gecko_pft_qa": 1.0, "gecko_pft_title_body": 1.0, "gecko_pft_squad": 0.0}
QA = {f"gecko_{name}": 0.1 for name in finetune.RETRIEVAL_TASKS if name != "miracl"}
NLI = {"gecko_snli": 0.1, "gecko_mnli": 0.1}
CLASSIFICATION = {"gecko_ag_news": 0.05, "gecko_imdb": 0.05, "gecko_classification": 0.05}
MULTILINGUAL = {"gecko_miracl": 0.1}
# FRet plus the human tasks read from local files (a third of the batch between them).
HUMAN = {"gecko_fret": 1.0, "gecko_stsb": 0.25, "gecko_classification": 0.25}
FINETUNE = {"gecko_fret": 1.0, **QA, **NLI, **CLASSIFICATION, "gecko_miracl": 0.0,
            "gecko_stsb": 0.0}


def _add(name: str, rates: dict[str, float]) -> None:
  seqio.MixtureRegistry.add(name, [(task, rate(default)) for task, default in rates.items()])


_add("gecko_prefinetune", PREFINETUNE)
_add("gecko_finetune", FINETUNE)
_add("gecko_fret_only", {"gecko_fret": 1.0})
_add("gecko_fret_human", HUMAN)
# The same with the LLM's scores of each FRet pair (a distillation loss); the human tasks
# carry NaN scores, which the distillation term skips.
for _score in ("ql", "rc"):
  _add(f"gecko_fret_{_score}_human", {f"gecko_fret_{_score}": HUMAN["gecko_fret"],
                                      **{f"{name}_no_teacher": HUMAN[name]
                                         for name in finetune.UNSCORED_HUMAN_TASKS}})
# FRet with every candidate's score (the listwise loss over them), the human tasks
# without candidates beside it.
_add("gecko_fret_candidates_human", {"gecko_fret_candidates": HUMAN["gecko_fret"],
                                     **{f"{name}_no_candidates": HUMAN[name]
                                        for name in finetune.UNSCORED_HUMAN_TASKS}})
_add("gecko_qa", QA)
_add("gecko_nli", NLI)
_add("gecko_classification_mix", CLASSIFICATION)
_add("gecko_multilingual", {"gecko_fret": 1.0, **MULTILINGUAL})
