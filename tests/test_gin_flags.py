"""gin_flags: the gin names a command line may use."""

import gecko_tasks  # noqa: F401  (registers the tasks the gin files name)


def test_a_deprecated_gin_name_still_binds_with_a_warning(capsys):
  """`seqio_data.` (the module is seqio_batches) works for one more release, saying so;
  a config.gin saved under the old name compares equal to the new one on resume."""
  import gin

  from gecko import gin_flags
  from gecko.data.seqio_batches import SeqioBatches
  files = ["gin/models/tiny.gin", "gin/runs/finetune.gin", "gin/data/seqio.gin"]
  try:
    gin_flags.configure(files, ["MODEL_DIR = '/tmp/unused'", "TASK_DATA_DIR = '/tmp/unused'",
                                "TRAIN_STEPS = 1", "seqio_data.SeqioBatches.shuffle_buffer = 7"])
    assert gin.get_bindings(SeqioBatches)["shuffle_buffer"] == 7
  finally:
    gin.clear_config()
  assert ("the gin name in 'seqio_data.SeqioBatches.shuffle_buffer = 7' is deprecated; write "
          "'seqio_batches.SeqioBatches.shuffle_buffer = 7'") in capsys.readouterr().err
  assert gin_flags._bindings("seqio_data.SeqioBatches.rates = {}\npair_data.PairBatches.x = 1") \
      == {"seqio_batches.SeqioBatches.rates": "{}", "pairs.PairBatches.x": "1"}
