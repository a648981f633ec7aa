"""Hugging Face encoder weights (safetensors only, never pickle) to the Flax tree, and back.

Two families: BERT (`BertModel`, e.g. MiniLM) and T5 v1.1 (`T5EncoderModel`, or the
encoder half of `T5ForConditionalGeneration`, e.g. t5-v1_1-xl, GTR-XL). The mapping is
explicit, one line per parameter (`_bert_key_map`, `_t5_key_map`), each with the
transform and its inverse, so `tensors_from_encoder_params` (the exporter's direction,
`gecko.models.hf_directory`) reads the same table the other way. Every HF tensor is
checked against the shape `jax.eval_shape` gives for our module; a mismatch names the
key, the expected shape and the found shape. Sharded checkpoints
(`model.safetensors.index.json`) are read shard by shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy

from gecko.models import bert, t5, unreadable

PathLike = str | os.PathLike
Params = dict[str, Any]
Config = bert.BertConfig | t5.T5Config
# HF tensor -> Flax array given the config (transposes and head splits), and back.
Transform = Callable[[np.ndarray, Config], np.ndarray]
Pair = tuple[Transform, Transform]
KeyMap = dict[str, tuple[tuple[str | int, ...], Pair]]

# Checkpoint tensors that have no counterpart in the encoder and are skipped.
_BERT_IGNORED = ("pooler.", "embeddings.position_ids", "cls.")
_T5_IGNORED = ("decoder.", "lm_head.", "encoder.embed_tokens.")  # embed_tokens is `shared`
_BERT_TYPES = ("bert", "roberta", "xlm-roberta")

# Each pair is (import, export): one table serves both directions, so they cannot drift.
_same: Pair = (lambda w, cfg: w, lambda x, cfg: x)
# torch Linear [out, in] <-> Flax kernel [in, out]
_linear: Pair = (lambda w, cfg: w.T, lambda x, cfg: x.T)
# [heads*kv, embed] <-> [embed, heads, kv]
_qkv_kernel: Pair = (lambda w, cfg: w.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim),
                     lambda x, cfg: x.reshape(cfg.hidden_size, -1).T)
_qkv_bias: Pair = (lambda b, cfg: b.reshape(cfg.num_heads, cfg.head_dim),
                   lambda x, cfg: x.reshape(-1))
# [embed, heads*kv] <-> [heads, kv, embed]
_attn_out_kernel: Pair = (
    lambda w, cfg: w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size),
    lambda x, cfg: x.reshape(-1, cfg.hidden_size).T)


def _bert_key_map(cfg: bert.BertConfig) -> KeyMap:
  """HF key (without any `bert.` prefix) -> (path in our encoder tree, transform)."""
  mapping = {
      "embeddings.word_embeddings.weight": (("embeddings", "word_embeddings"), _same),
      "embeddings.position_embeddings.weight": (("embeddings", "position_embeddings"), _same),
      "embeddings.token_type_embeddings.weight": (("embeddings", "token_type_embeddings"), _same),
      "embeddings.LayerNorm.weight": (("embeddings", "layer_norm", "LayerNorm_0", "scale"), _same),
      "embeddings.LayerNorm.bias": (("embeddings", "layer_norm", "LayerNorm_0", "bias"), _same),
  }
  for i in range(cfg.num_layers):
    hf, ours = f"encoder.layer.{i}.", (f"layer_{i}",)
    att = ours + ("attention",)
    for name in ("query", "key", "value"):
      mapping[f"{hf}attention.self.{name}.weight"] = (att + (name, "kernel"), _qkv_kernel)
      mapping[f"{hf}attention.self.{name}.bias"] = (att + (name, "bias"), _qkv_bias)
    mapping[f"{hf}attention.output.dense.weight"] = (att + ("output", "kernel"), _attn_out_kernel)
    mapping[f"{hf}attention.output.dense.bias"] = (att + ("output", "bias"), _same)
    for hf_ln, our_ln in (("attention.output.LayerNorm", "attention_layer_norm"),
                          ("output.LayerNorm", "output_layer_norm")):
      mapping[f"{hf}{hf_ln}.weight"] = (ours + (our_ln, "LayerNorm_0", "scale"), _same)
      mapping[f"{hf}{hf_ln}.bias"] = (ours + (our_ln, "LayerNorm_0", "bias"), _same)
    mlp = ours + ("mlp",)
    mapping[f"{hf}intermediate.dense.weight"] = (mlp + ("intermediate", "kernel"), _linear)
    mapping[f"{hf}intermediate.dense.bias"] = (mlp + ("intermediate", "bias"), _same)
    mapping[f"{hf}output.dense.weight"] = (mlp + ("output", "kernel"), _linear)
    mapping[f"{hf}output.dense.bias"] = (mlp + ("output", "bias"), _same)
  return mapping


def _t5_key_map(cfg: t5.T5Config) -> KeyMap:
  """HF `T5EncoderModel` key -> (path in our encoder tree, transform).

  Our blocks are scanned: block i's parameters are row i of arrays stacked along a
  leading `layers` axis, so a per-block path ends in the integer index `i`
  (`encoder_params_from_tensors` stacks them).
  """
  mapping = {
      "shared.weight": (("token_embedder",), _same),
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
          (("relative_bias", "rel_embedding"), _same),
      "encoder.final_layer_norm.weight": (("final_norm", "scale"), _same),
  }
  for i in range(cfg.num_layers):
    hf, ours = f"encoder.block.{i}.layer.", ("layers",)
    att = ours + ("attention",)
    for hf_name, name in (("q", "query"), ("k", "key"), ("v", "value")):
      mapping[f"{hf}0.SelfAttention.{hf_name}.weight"] = (att + (name, "kernel", i), _qkv_kernel)
    mapping[f"{hf}0.SelfAttention.o.weight"] = (att + ("output", "kernel", i), _attn_out_kernel)
    mapping[f"{hf}0.layer_norm.weight"] = (ours + ("attention_norm", "scale", i), _same)
    for name in ("wi_0", "wi_1", "wo"):
      mapping[f"{hf}1.DenseReluDense.{name}.weight"] = (ours + ("mlp", name, "kernel", i), _linear)
    mapping[f"{hf}1.layer_norm.weight"] = (ours + ("mlp_norm", "scale", i), _same)
  return mapping


def _t5_config(hf: Mapping[str, Any], path: str) -> t5.T5Config:
  proj = hf.get("feed_forward_proj", "relu")
  if proj != "gated-gelu":
    raise ValueError(f"{path}: feed_forward_proj={proj!r} is not supported; the T5 backbone is "
                     "the v1.1 layout (gated-gelu: t5-v1_1-*, GTR, sentence-T5, Flan-T5).")
  return t5.T5Config(
      vocab_size=hf["vocab_size"], hidden_size=hf["d_model"], num_layers=hf["num_layers"],
      num_heads=hf["num_heads"], head_dim=hf["d_kv"], mlp_dim=hf["d_ff"],
      relative_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_max_distance=hf.get("relative_attention_max_distance", 128),
      layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6), dropout_rate=hf.get("dropout_rate", 0.1),
      max_length=int(hf.get("n_positions", 512)))


def config_from_hf(config_path: PathLike) -> Config:
  """The backbone sizes from a Hugging Face `config.json` (BERT family or T5 v1.1)."""
  hf = unreadable.read_json(config_path)
  model_type = hf.get("model_type", "bert")
  if model_type == "t5":
    return _t5_config(hf, os.fspath(config_path))
  if model_type not in _BERT_TYPES:
    raise ValueError(f"{os.fspath(config_path)}: model_type={model_type!r} is neither a BERT-family "
                     "encoder nor T5; only those checkpoints can be imported.")
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"{os.fspath(config_path)}: hidden_act={hf['hidden_act']!r} is not supported "
                     "(the backbone uses exact GELU).")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{os.fspath(config_path)}: position_embedding_type="
                     f"{hf['position_embedding_type']!r} is not supported (absolute only).")
  return bert.BertConfig(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      mlp_dim=hf["intermediate_size"], max_length=hf["max_position_embeddings"],
      type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
      dropout_rate=hf.get("hidden_dropout_prob", 0.1))


def read_safetensors(path: PathLike) -> dict[str, np.ndarray]:
  """All tensors of a `.safetensors` file as NumPy arrays."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Weights file not found: {os.fspath(path)!r}.")
  try:
    return safetensors_numpy.load_file(os.fspath(path))
  except safetensors.SafetensorError as e:
    raise ValueError(f"{os.fspath(path)} is not a readable safetensors file ({e}); it may have "
                     "been cut short by an interrupted copy or download: copy it again.") from None


def read_checkpoint(model_dir: PathLike) -> dict[str, np.ndarray]:
  """The tensors of `model.safetensors`, or of every shard its `.index.json` names."""
  model_dir = os.fspath(model_dir)
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if not os.path.exists(index):
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))
  shards = sorted(set(unreadable.read_json(index)["weight_map"].values()))
  tensors: dict[str, np.ndarray] = {}
  for shard in shards:
    tensors.update(read_safetensors(os.path.join(model_dir, shard)))
  return tensors


def has_checkpoint(model_dir: PathLike) -> bool:
  return any(os.path.exists(os.path.join(os.fspath(model_dir), name))
             for name in ("model.safetensors", "model.safetensors.index.json"))


def _set(tree: Params, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def encoder_params_from_tensors(tensors: Mapping[str, np.ndarray], *, config: Config,
                                expected: Mapping[str, Any]) -> Params:
  """Maps HF BERT or T5 tensors onto the encoder's parameter tree.

  Args:
    tensors: HF names -> arrays (a BERT `bert.` prefix, if present, is stripped; a T5
      checkpoint's decoder and LM head are skipped).
    config: The backbone sizes (its type selects the family).
    expected: The encoder's abstract parameter tree (from `jax.eval_shape`), used
      to check every shape.

  Returns:
    A nested dict of float32 NumPy arrays with the structure of `expected`.

  Raises:
    ValueError: a tensor is missing, unexpected, or has the wrong shape.
  """
  if isinstance(config, t5.T5Config):
    family, prefix, mapping, ignored = "T5", "", _t5_key_map(config), _T5_IGNORED
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
      tensors = {**tensors, "shared.weight": tensors["encoder.embed_tokens.weight"]}
  else:
    family, ignored = "BERT", _BERT_IGNORED
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    mapping = _bert_key_map(config)
  missing = sorted(set(mapping) - set(tensors))
  if missing:
    raise ValueError(f"Checkpoint lacks {len(missing)} {family} tensors, first "
                     f"{prefix}{missing[0]!r}; is it a {config.num_layers}-layer {family} checkpoint?")
  unknown = sorted(k for k in set(tensors) - set(mapping) if not k.startswith(ignored))
  if unknown:
    raise ValueError(f"Checkpoint has tensors the encoder does not use, first {prefix}{unknown[0]!r}; "
                     "check the config.json matches the weights (e.g. num_hidden_layers).")
  params: Params = {}
  for key, (path, transform) in mapping.items():
    row = path[-1] if isinstance(path[-1], int) else None  # a row of a stacked (scanned) array
    array_path = path[:-1] if row is not None else path
    want = tuple(_get(expected, array_path).shape)
    want = want[1:] if row is not None else want
    found = tuple(tensors[key].shape)
    try:
      value = np.asarray(transform[0](tensors[key], config), dtype=np.float32)
    except ValueError:  # a reshape that cannot apply: reported below as a mismatch
      value = None
    if value is None or value.shape != want:
      raise ValueError(f"Shape mismatch for {prefix}{key}: the encoder expects {want} at "
                       f"{'/'.join(map(str, path))} (after transform), the checkpoint has {found}.")
    if row is None:
      _set(params, path, value)
    else:
      try:
        stacked = _get(params, array_path)
      except KeyError:
        stacked = np.empty(_get(expected, array_path).shape, np.float32)
        _set(params, array_path, stacked)
      stacked[row] = value
  return params


def tensors_from_encoder_params(params: Mapping[str, Any], *, config: Config
                                ) -> dict[str, np.ndarray]:
  """The encoder's parameters as Hugging Face tensors (BertModel or T5EncoderModel names),
  float32 and contiguous; the inverse of `encoder_params_from_tensors`.

  A BERT export also holds a zero pooler (BertModel has one; mean pooling never uses
  it), so that transformers loads the directory without "newly initialised" weights.
  """
  mapping = _t5_key_map(config) if isinstance(config, t5.T5Config) else _bert_key_map(config)
  tensors = {}
  for key, (path, transform) in mapping.items():
    row = path[-1] if isinstance(path[-1], int) else None
    value = np.asarray(_get(params, path[:-1] if row is not None else path), np.float32)
    tensors[key] = np.ascontiguousarray(transform[1](value[row] if row is not None else value,
                                                     config), dtype=np.float32)
  if isinstance(config, bert.BertConfig):
    h = config.hidden_size
    tensors["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    tensors["pooler.dense.bias"] = np.zeros((h,), np.float32)
  return tensors
