"""Write a model as a sentence-transformers / Hugging Face directory (safetensors only).

  save_hf(embedder, "out/gecko-minilm")   # SentenceTransformer("out/gecko-minilm") loads it

The directory holds, with no custom code needed to load it:

  config.json, model.safetensors     the encoder in Hugging Face naming (BertModel or
                                     T5EncoderModel): the importer's tensor table
                                     (`checkpoint_import`) read in the other direction
  vocab.txt | spiece.model,          the tokenizer (BertTokenizer / T5Tokenizer)
  tokenizer_config.json
  modules.json                       Transformer -> Pooling (mean) [-> Dense] -> Normalize
  sentence_bert_config.json          max_seq_length
  1_Pooling/config.json              mean pooling
  2_Dense/                           the bias-free projection (identity activation), if any
  3_Normalize/
  config_sentence_transformers.json  Gecko's input format as named prompts, cosine
                                     similarity, and (key "gecko") the Matryoshka dims
  README.md                          a model card (`model_card`)

`gecko.models.embedder.load` reads such a directory back to the same parameters, bit
for bit, with its Matryoshka dims and prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
from safetensors import numpy as safetensors_numpy

from gecko.data import disk, paths, tokenization
from gecko.data.input_format import GECKO, TASK_STRINGS, InputFormat
from gecko.models import bert, checkpoint_import, t5, unreadable

ST_CONFIG = "config_sentence_transformers.json"
IDENTITY = "torch.nn.modules.linear.Identity"


def prompts(fmt: InputFormat = GECKO) -> dict[str, str]:
  """Named prompts (prefixes) for sentence-transformers: `query` and `document` for
  retrieval, and one per task family's string (symmetric tasks use the query format
  on every text). A document prompt cannot carry a title: it is `title: none | ...`."""
  def query(task: str) -> str:
    return fmt.query("\0", task=task).split("\0")[0]
  out = {"query": query(TASK_STRINGS["Retrieval"]),
         "document": fmt.document("\0").split("\0")[0]}
  for name, task in (("question_answering", "question answering"),
                     ("fact_checking", "fact checking"),
                     ("semantic_similarity", TASK_STRINGS["STS"]),
                     ("classification", TASK_STRINGS["Classification"]),
                     ("clustering", TASK_STRINGS["Clustering"])):
    out[name] = query(task)
  return out


def _hf_config(config: bert.BertConfig | t5.T5Config) -> dict:
  if isinstance(config, t5.T5Config):
    return {"architectures": ["T5EncoderModel"], "model_type": "t5",
            "vocab_size": config.vocab_size, "d_model": config.hidden_size,
            "num_layers": config.num_layers, "num_heads": config.num_heads,
            "d_kv": config.head_dim, "d_ff": config.mlp_dim,
            "relative_attention_num_buckets": config.relative_buckets,
            "relative_attention_max_distance": config.relative_max_distance,
            "layer_norm_epsilon": config.layer_norm_eps, "dropout_rate": config.dropout_rate,
            "feed_forward_proj": "gated-gelu", "n_positions": config.max_length,
            "is_encoder_decoder": False, "use_cache": False, "tie_word_embeddings": False,
            "pad_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32"}
  return {"architectures": ["BertModel"], "model_type": "bert",
          "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
          "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
          "intermediate_size": config.mlp_dim, "max_position_embeddings": config.max_length,
          "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
          "hidden_act": "gelu", "hidden_dropout_prob": config.dropout_rate,
          "attention_probs_dropout_prob": config.dropout_rate,
          "position_embedding_type": "absolute", "pad_token_id": 0, "torch_dtype": "float32"}


def _write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")


def _tokenizer_files(tokenizer: tokenization.Tokenizer, directory: str) -> None:
  """The tokenizer's own files, with a `tokenizer_config.json` transformers reads."""
  tokenizer.save(directory)
  if isinstance(tokenizer, tokenization.SentencePieceTokenizer):
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": tokenizer.max_length,
              "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
              "additional_special_tokens": []}
  else:
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
              "strip_accents": None, "tokenize_chinese_chars": True,
              "model_max_length": tokenizer.max_length, "unk_token": "[UNK]",
              "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
              "mask_token": "[MASK]", "clean_up_tokenization_spaces": False}
  _write_json(os.path.join(directory, "tokenizer_config.json"), config)


def save_hf(embedder, directory: str | os.PathLike, *, overwrite: bool = False,
            fmt: InputFormat = GECKO, default_prompt_name: str | None = None,
            card: str | None = None) -> str:
  """Writes `embedder` (a `gecko.models.embedder.Embedder`) as a sentence-transformers
  directory (module docstring); returns the directory.

  Args:
    embedder: The model, its parameters and tokenizer.
    directory: Where to write; an existing non-empty directory needs `overwrite`.
    overwrite: Replace the contents of a non-empty `directory`.
    fmt: The input format the prompts are written in.
    default_prompt_name: A prompt applied when `encode` is given none (None: none).
    card: The model card's Markdown (None: a short one from the model's sizes).

  Raises:
    FileExistsError: `directory` is not empty and `overwrite` is False.
    ValueError: `default_prompt_name` is not one of the prompts.
  """
  target = paths.absolute(directory)
  check_output(target, overwrite=overwrite, flag="overwrite=True (--overwrite)")
  named = prompts(fmt)
  if default_prompt_name is not None and default_prompt_name not in named:
    raise ValueError(f"default_prompt_name={default_prompt_name!r} is not one of the prompts "
                     f"{sorted(named)}.")
  disk.check_free(target, needed=disk.nbytes(embedder.params), what="the export")
  with paths.replaced_dir(target) as directory:  # swapped in whole, or not at all
    _write_hf(embedder, directory, named=named, fmt=fmt,
              default_prompt_name=default_prompt_name, card=card)
  return target


def _write_hf(embedder, directory: str, *, named: Mapping[str, str], fmt: InputFormat,
              default_prompt_name: str | None, card: str | None) -> None:
  """The files of `save_hf`, into an empty local `directory`."""
  module, params = embedder.module, embedder.params
  config = module.backbone
  _write_json(os.path.join(directory, "config.json"), _hf_config(config))
  tensors = checkpoint_import.tensors_from_encoder_params(params["encoder"], config=config)
  safetensors_numpy.save_file(tensors, os.path.join(directory, "model.safetensors"),
                              metadata={"format": "pt"})
  _tokenizer_files(embedder.tokenizer, directory)
  _write_json(os.path.join(directory, "sentence_bert_config.json"),
              {"max_seq_length": embedder.tokenizer.max_length, "do_lower_case": False})
  modules = [("sentence_transformers.models.Transformer", ""),
             ("sentence_transformers.models.Pooling", "1_Pooling")]
  os.makedirs(os.path.join(directory, "1_Pooling"))
  _write_json(os.path.join(directory, "1_Pooling", "config.json"), {
      "word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
      "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
      "pooling_mode_lasttoken": False, "include_prompt": True})
  if "projection" in params:
    kernel = np.asarray(params["projection"]["kernel"], np.float32)  # [hidden, out]
    dense = os.path.join(directory, "2_Dense")
    os.makedirs(dense)
    _write_json(os.path.join(dense, "config.json"), {
        "in_features": int(kernel.shape[0]), "out_features": int(kernel.shape[1]),
        "bias": False, "activation_function": IDENTITY})
    safetensors_numpy.save_file({"linear.weight": np.ascontiguousarray(kernel.T)},
                                os.path.join(dense, "model.safetensors"))
    modules.append(("sentence_transformers.models.Dense", "2_Dense"))
  os.makedirs(os.path.join(directory, "3_Normalize"))
  modules.append(("sentence_transformers.models.Normalize", "3_Normalize"))
  _write_json(os.path.join(directory, "modules.json"), [
      {"idx": i, "name": str(i), "path": path, "type": kind}
      for i, (kind, path) in enumerate(modules)])
  _write_json(os.path.join(directory, ST_CONFIG), {
      "prompts": named, "default_prompt_name": default_prompt_name,
      "similarity_fn_name": "cosine",
      "gecko": {"matryoshka_dims": list(module.matryoshka_dims),
                "query_template": fmt.query_template,
                "document_template": fmt.document_template}})
  with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
    f.write(card if card is not None else model_card(embedder, named_prompts=named))


def check_output(directory: str | os.PathLike, *, overwrite: bool,
                 flag: str = "--overwrite") -> bool:
  """Whether `directory` holds files (to be replaced); FileExistsError naming `flag`
  when it does and `overwrite` is False. Callers check before any costly work."""
  directory = os.fspath(directory)
  paths.check_output_dir(directory, flag="the output")  # a file there: ValueError
  full = paths.isdir(directory) and bool(paths.listdir(directory))
  if full and not overwrite:
    raise FileExistsError(f"{directory!r} is not empty; pass {flag} to replace its contents.")
  return full


def read_st_config(directory: str | os.PathLike) -> Mapping:
  """`config_sentence_transformers.json` of a directory ({} when it has none)."""
  path = os.path.join(os.fspath(directory), ST_CONFIG)
  if not os.path.exists(path):
    return {}
  return unreadable.read_json(path)


def model_card(embedder, *, named_prompts: Mapping[str, str], base_model: str | None = None,
               training: str | None = None, results: str | None = None,
               name: str = "gecko-model") -> str:
  """A model card: what the model is, how to load and truncate it, its prompts, and
  (when given) the base model, the training run and the evaluation results."""
  module = embedder.module
  dims = module.matryoshka_dims
  small = dims[0]
  lines = [
      "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
      "tags: [sentence-transformers, feature-extraction, gecko, matryoshka]",
      *([f"base_model: {base_model}"] if base_model else []), "---", "",
      f"# {name}", "",
      f"A Gecko text-embedding model (arXiv 2403.20327) trained with the open JAX "
      f"implementation: a {type(module.backbone).__name__.removesuffix('Config')} encoder "
      f"({module.backbone.num_layers} layers, width {module.backbone.hidden_size}), mean "
      f"pooling, {'a bias-free projection to ' + str(module.output_dim) + ' dims, ' if module.embed_dim else ''}"
      f"L2 normalisation; {module.output_dim}-d embeddings, inputs up to "
      f"{embedder.tokenizer.max_length} tokens.", "",
      "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
      'model = SentenceTransformer("PATH")',
      'queries = model.encode(["how do geckos climb walls?"], prompt_name="query")',
      'docs = model.encode(["Geckos cling with van der Waals forces."], prompt_name="document")',
      "```", "",
      f"Matryoshka dims {list(dims)}: `SentenceTransformer(\"PATH\", truncate_dim={small})` "
      f"keeps the first {small} coordinates; re-normalise them "
      "(`encode(..., normalize_embeddings=True)`) before a dot product.", "",
      "## Prompts (Gecko's input format)", "", "| name | prompt |", "|---|---|",
      *(f"| `{k}` | `{v}` |" for k, v in named_prompts.items()), "",
      "Symmetric tasks (similarity, classification, clustering) put the same prompt on "
      "every text. A titled document is `title: {title} | text: {text}`: pass it as the "
      "text with `prompt=\"\"`.", ""]
  if base_model:
    lines += ["## Base model", "", f"`{base_model}`", ""]
  if training:
    lines += ["## Training", "", "```", training.strip(), "```", ""]
  if results:
    lines += ["## Evaluation", "", results.strip(), ""]
  return "\n".join(lines)
