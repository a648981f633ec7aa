"""Import Hugging Face BERT weights (safetensors only, never pickle) into the Flax tree.

The mapping is explicit, one line per parameter (`_bert_key_map`). Every HF tensor is
checked against the shape `jax.eval_shape` gives for our module; a mismatch names the
key, the expected shape and the found shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from safetensors import numpy as safetensors_numpy

from gecko.models import bert

PathLike = str | os.PathLike
Params = dict[str, Any]
# HF tensor -> Flax array, given the config (transposes and head splits).
Transform = Callable[[np.ndarray, bert.BertConfig], np.ndarray]

# Checkpoint tensors that have no counterpart in the encoder and are skipped.
_IGNORED_PREFIXES = ("pooler.", "embeddings.position_ids", "cls.")


def _same(w, cfg):
  return w


def _linear(w, cfg):  # torch Linear [out, in] -> Flax kernel [in, out]
  return w.T


def _qkv_kernel(w, cfg):  # [heads*kv, embed] -> [embed, heads, kv]
  return w.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def _qkv_bias(b, cfg):
  return b.reshape(cfg.num_heads, cfg.head_dim)


def _attn_out_kernel(w, cfg):  # [embed, heads*kv] -> [heads, kv, embed]
  return w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def _bert_key_map(cfg: bert.BertConfig) -> dict[str, tuple[tuple[str, ...], Transform]]:
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


def config_from_hf(config_path: PathLike) -> bert.BertConfig:
  """A `BertConfig` from a Hugging Face `config.json` (BERT family only)."""
  with open(config_path, encoding="utf-8") as f:
    hf = json.load(f)
  model_type = hf.get("model_type", "bert")
  if model_type not in ("bert", "roberta", "xlm-roberta"):
    raise ValueError(f"{os.fspath(config_path)}: model_type={model_type!r} is not a BERT-family "
                     "encoder; only bert-style checkpoints can be imported.")
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
  return safetensors_numpy.load_file(os.fspath(path))


def _set(tree: Params, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def bert_params_from_tensors(tensors: Mapping[str, np.ndarray], *, config: bert.BertConfig,
                             expected: Mapping[str, Any]) -> Params:
  """Maps HF BERT tensors onto the encoder's parameter tree.

  Args:
    tensors: HF names -> arrays (a `bert.` prefix, if present, is stripped).
    config: The backbone sizes.
    expected: The encoder's abstract parameter tree (from `jax.eval_shape`), used
      to check every shape.

  Returns:
    A nested dict of float32 NumPy arrays with the structure of `expected`.

  Raises:
    ValueError: a tensor is missing, unexpected, or has the wrong shape.
  """
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  mapping = _bert_key_map(config)
  missing = sorted(set(mapping) - set(tensors))
  if missing:
    raise ValueError(f"Checkpoint lacks {len(missing)} BERT tensors, first {prefix}{missing[0]!r}; "
                     f"is it a {config.num_layers}-layer BERT checkpoint?")
  unknown = sorted(k for k in set(tensors) - set(mapping) if not k.startswith(_IGNORED_PREFIXES))
  if unknown:
    raise ValueError(f"Checkpoint has tensors the encoder does not use, first {prefix}{unknown[0]!r}; "
                     "check the config.json matches the weights (e.g. num_hidden_layers).")
  params: Params = {}
  for key, (path, transform) in mapping.items():
    want = tuple(_get(expected, path).shape)
    found = tuple(tensors[key].shape)
    try:
      value = np.asarray(transform(tensors[key], config), dtype=np.float32)
    except ValueError:  # a reshape that cannot apply: reported below as a mismatch
      value = None
    if value is None or value.shape != want:
      raise ValueError(f"Shape mismatch for {prefix}{key}: the encoder expects {want} at "
                       f"{'/'.join(path)} (after transform), the checkpoint has {found}.")
    _set(params, path, value)
  return params
