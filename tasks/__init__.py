"""Gecko's SeqIO tasks and mixtures (import name `gecko_tasks`; import it from gin files).

  import gecko_tasks      # registers everything below

File sources live under <root> = TASK_DATA_DIR (gin; SeqioBatches.data_dir) or
$GECKO_DATA_DIR, local or gs://; JSONL may be gzipped (docs/training.md: "SeqIO tasks and mixtures").

Pre-finetuning (Eq. 2 data: query + positive):
  gecko_pft_qa            <root>/prefinetune/qa/*.jsonl          {"question", "answer", "title"?}
  gecko_pft_title_body    <root>/prefinetune/title_body/*.jsonl  {"title", "body"}
  gecko_pft_squad         TFDS squad (question -> title + context)
Fine-tuning (Eq. 3 data: query + positive + hard negative):
  gecko_fret              <root>/fret/fret-*.tfrecord, else fret-*.jsonl  (gecko.fret.schema)
  gecko_fret_ql, gecko_fret_rc
                          <root>/fret/fret-*.jsonl with the LLM's QL or RC score of the
                          positive and the negative (teacher_positive / teacher_negative,
                          for GeckoLoss.distillation); alone, or in the mixtures below
  gecko_nq, gecko_hotpotqa, gecko_fever, gecko_medmcqa, gecko_miracl
                          <root>/<name>/*.jsonl  {"query", "positive_text", "negative_text",
                                                    "positive_title"?, "negative_title"?}
  gecko_snli, gecko_mnli  TFDS snli / multi_nli, grouped by premise (symmetric)
  gecko_ag_news, gecko_imdb
                          TFDS ag_news_subset / imdb_reviews as classification triples
  gecko_classification    <root>/classification/*.jsonl  {"text", "label", "task"?}
  gecko_stsb              <root>/stsb/sts-train.csv (STS-B), symmetric
  gecko_stsb_no_teacher, gecko_classification_no_teacher
                          the same with NaN teacher scores (to mix with gecko_fret_ql/rc)
Mixtures (rates: `gecko_tasks.mixtures`, overridable per task with SeqioBatches.rates):
  gecko_prefinetune, gecko_finetune, gecko_fret_only, gecko_fret_human, gecko_qa,
  gecko_nli, gecko_classification_mix, gecko_multilingual,
  gecko_fret_ql_human, gecko_fret_rc_human (gecko_fret_human with the pair's scores)
"""

# Tasks before the mixtures that name them.
from gecko_tasks import prefinetune, finetune  # noqa: F401,I001  (registrations)
from gecko_tasks import mixtures  # noqa: F401
