"""FRet LLM backends: the embedded llama.cpp model (SmolLM2), a real llama.cpp HTTP server
on 127.0.0.1 through the OpenAI-compatible backend, and retries against a server that
fails on purpose (the one fault that cannot be caused otherwise)."""

import http.server
import json
import math
import threading
import time
import urllib.request
import zlib

import pytest
from conftest import require_module, start_llama_server

from gecko.fret import llm


def _need_llama_cpp():
  require_module("llama_cpp", "the embedded LLM (the [local] extra, which make install installs)")

COUNTING = "1, 2, 3, 4, 5, 6,"
CAPITAL = "The capital of France is"


@pytest.fixture(scope="module")
def local():
  _need_llama_cpp()
  return llm.LlamaCpp(n_ctx=512)


def test_local_generation_continues_a_pattern(local):
  (text,) = local.generate([COUNTING], max_tokens=4, stop=["\n"])
  assert text.strip().startswith("7")


def test_local_log_likelihood_is_consistent_and_sensible(local):
  paris, banana = local.log_likelihood([CAPITAL, CAPITAL], [" Paris", " banana"])
  assert paris > banana and paris < 0
  # The chain rule: log P(a b | c) = log P(a | c) + log P(b | c a).
  (both,) = local.log_likelihood([CAPITAL], [" Paris and"])
  (second,) = local.log_likelihood([CAPITAL + " Paris"], [" and"])
  assert both == pytest.approx(paris + second, abs=1e-3)
  # The first continuation token is scored from the context's last position (no shift).
  (labels,) = local.label_logprobs([CAPITAL], [" Paris"])
  assert labels[" Paris"] == pytest.approx(paris, abs=1e-3)  # " Paris" is one token


def test_local_errors_are_named(tmp_path):
  _need_llama_cpp()
  with pytest.raises(FileNotFoundError, match="nope.gguf"):
    llm.LlamaCpp(model_path=str(tmp_path / "nope.gguf"))
  moved = llm.LlamaCpp()
  moved.model_path = str(tmp_path / "moved.gguf")  # there when made, gone when the run starts
  with pytest.raises(llm.LLMError, match="no GGUF file at .*moved.gguf"):
    moved.check()


def test_both_backends_are_the_llm_protocol(local):
  members = {name for name in vars(llm.LLM) if not name.startswith("_")}
  members |= set(llm.LLM.__annotations__)
  assert members == {"name", "model", "concurrency", "query_likelihood",
                     "relevance_classification", "check", "generate", "truncate",
                     "log_likelihood", "label_logprobs"}
  server = llm.OpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m")
  for backend in (local, server):
    assert [name for name in sorted(members) if not hasattr(backend, name)] == []
  assert local.concurrency == 1 and server.concurrency == 8
  local.check()  # the packaged GGUF is there


def test_the_private_llama_cpp_flag_gecko_switches_is_still_there(local):
  """llama-cpp-python has no public way to switch between last-row and every-row
  logits on a loaded model; `gecko.fret.llm._logits` flips `Llama._logits_all`. If an
  upgrade renames it, this fails by name (and `_logits` raises, never scores wrongly)."""
  local.truncate("load the model", 2)
  assert hasattr(local._llm, "_logits_all"), "llama_cpp.Llama._logits_all is gone"
  with llm._logits(local._llm, every_row=False):
    assert local._llm._logits_all is False
  assert local._llm._logits_all is True  # restored: the model was loaded with logits_all


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  proc, url = start_llama_server(tmp_path_factory.mktemp("server"))
  yield url
  proc.terminate()
  proc.wait(timeout=30)


@pytest.mark.slow
def test_server_generation_and_relevance_scores_match_the_local_model(server, local):
  remote = llm.OpenAICompatible(base_url=server, model="smollm2", concurrency=2)
  texts = remote.generate([COUNTING, CAPITAL], max_tokens=4, stop=["\n"])
  assert texts == local.generate([COUNTING, CAPITAL], max_tokens=4, stop=["\n"])
  prompt = ("Q: Is fire hot? A: yes\nQ: Is ice hot? A: no\nQ: Is snow white? A: yes\n"
            "Q: Is Paris the capital of France? A:")
  (got,) = remote.label_logprobs([prompt], [" yes", " no"])
  (want,) = local.label_logprobs([prompt], [" yes", " no"])
  for label in (" yes", " no"):
    assert got[label] == pytest.approx(want[label], abs=0.05)
  assert math.exp(want[" yes"]) + math.exp(want[" no"]) > 0.8  # the few-shot format holds
  assert remote.relevance_classification and not remote.query_likelihood
  with pytest.raises(llm.LLMError, match="cannot give QL scores"):
    remote.log_likelihood([CAPITAL], [" Paris"])


class _Faulty(http.server.BaseHTTPRequestHandler):
  """Plays `script` (one fault per request: "429", "500", "garbage", "no_choices",
  "timeout"), then answers a completion; 400 for the model "bad"."""

  script: list = []
  seen: list = []

  def do_POST(self):  # noqa: N802
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    type(self).seen.append((body, self.headers.get("Authorization")))
    fault = type(self).script.pop(0) if type(self).script else None
    code, data = 200, json.dumps({"choices": [{"text": " ok"}]}).encode()
    if body["model"] == "bad":
      code, data = 400, b'{"error": "unknown model bad"}'
    elif fault in ("429", "500"):
      code, data = int(fault), b'{"error": "try later"}'
    elif fault == "garbage":
      data = b"<html>502 Bad Gateway</html>"
    elif fault == "no_choices":
      data = b'{"object": "error"}'
    elif fault == "timeout":
      time.sleep(1.0)  # past the client's timeout
    self.send_response(code)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    try:
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
      pass

  def log_message(self, *args):
    pass


@pytest.fixture
def faulty():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  _Faulty.seen, _Faulty.script = [], []
  yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
  httpd.shutdown()


def test_retries_with_backoff_then_succeeds_and_sends_the_key(faulty, monkeypatch):
  monkeypatch.setenv("GECKO_TEST_KEY", "s3cret")
  _Faulty.script = ["429", "500", "garbage", "no_choices", "timeout"]
  backend = llm.OpenAICompatible(base_url=faulty, model="m", api_key_env="GECKO_TEST_KEY",
                                 backoff=0.02, max_retries=5, timeout=0.3)
  start = time.perf_counter()
  assert backend.generate(["hello"]) == [" ok"]
  assert backend.calls == 6
  assert time.perf_counter() - start >= 0.02 * (1 + 2 + 4 + 8 + 16) + 0.3
  assert {auth for _, auth in _Faulty.seen} == {"Bearer s3cret"}
  assert "s3cret" not in repr(backend)


def test_gives_up_after_retries_and_fails_fast_on_client_errors(faulty, monkeypatch):
  _Faulty.script = ["429"] * 3
  backend = llm.OpenAICompatible(base_url=faulty, model="m", backoff=0.01, max_retries=2)
  with pytest.raises(llm.LLMError, match="after 3 attempts .*HTTP 429"):
    backend.generate(["hello"])
  _Faulty.script = ["garbage"] * 3
  with pytest.raises(llm.LLMError, match="after 3 attempts .*malformed response.*Bad Gateway"):
    backend.label_logprobs(["hello"], [" yes"])
  bad = llm.OpenAICompatible(base_url=faulty, model="bad", backoff=0.01)
  with pytest.raises(llm.LLMError, match="HTTP 400.*unknown model bad"):
    bad.generate(["hello"])
  assert bad.calls == 1
  monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
  with pytest.raises(llm.LLMError, match="NO_SUCH_KEY_VAR"):
    llm.OpenAICompatible(base_url=faulty, model="m", api_key_env="NO_SUCH_KEY_VAR").generate(["x"])


def test_local_truncates_to_a_token_budget_and_pickles_as_its_settings(local):
  import pickle
  huge = "Geckos shed their skin and eat it. " * 30_000  # ~1 MB
  head = local.truncate(huge, 50)
  assert huge.startswith(head) and 100 < len(head) < 400
  assert len(local._tokens(head)) <= 50
  assert local.truncate("short text", 50) == "short text"
  clone = pickle.loads(pickle.dumps(local))  # what a Beam worker receives
  assert clone._handle is None and clone.model_path == local.model_path
  assert clone.generate([COUNTING], max_tokens=4, stop=["\n"]) == local.generate(
      [COUNTING], max_tokens=4, stop=["\n"])


def test_local_scores_reuse_the_shared_prefix_without_changing_them(local):
  few_shot = "Passage: geckos climb walls.\nRelevant: yes\n\nPassage: bread rises.\nRelevant:"
  first = local.label_logprobs([few_shot + " no\n\nPassage: the moon.\nRelevant:"], [" yes"])
  second = local.log_likelihood([few_shot], [" yes"])  # a prefix of the first prompt
  fresh = llm.LlamaCpp(n_ctx=512)  # nothing evaluated before
  assert second == pytest.approx(fresh.log_likelihood([few_shot], [" yes"]), abs=1e-3)
  assert first[0][" yes"] == pytest.approx(fresh.label_logprobs(
      [few_shot + " no\n\nPassage: the moon.\nRelevant:"], [" yes"])[0][" yes"], abs=1e-3)


def test_local_query_likelihood_equals_a_hand_computed_log_softmax_sum(local):
  """QL from raw llama.cpp logits, summed by hand, on a model that has evaluated nothing."""
  import numpy as np
  from llama_cpp import Llama
  raw = Llama(model_path=llm.default_gguf(), n_ctx=512, logits_all=True, verbose=False)
  context, continuation = "Passage: Geckos climb walls.\nQuery:", " how do geckos climb"
  ctx = raw.tokenize(context.encode(), add_bos=False, special=False)
  cont = raw.tokenize(continuation.encode(), add_bos=False, special=False)
  raw.eval(ctx + cont)
  total = 0.0
  for i, token in enumerate(cont):
    logits = np.asarray(raw.scores[len(ctx) - 1 + i], np.float64)  # predicts token i
    total += logits[token] - logits.max() - math.log(np.exp(logits - logits.max()).sum())
  (ours,) = local.log_likelihood([context], [continuation])
  assert ours == pytest.approx(total, abs=1e-3) and total < 0


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
  """Forwards to the real llama.cpp server, except that while `failing` a third of the
  requests (by a hash of the body, so the same ones every time) get HTTP 500."""

  upstream = ""
  failing = True
  failed = 0

  def _answer(self, code, data):
    self.send_response(code)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def do_GET(self):  # noqa: N802  (the backend's reachability check)
    with urllib.request.urlopen(type(self).upstream + self.path[len("/v1"):]) as response:
      self._answer(response.status, response.read())

  def do_POST(self):  # noqa: N802
    body = self.rfile.read(int(self.headers["Content-Length"]))
    if type(self).failing and zlib.crc32(body) % 3 == 0:
      type(self).failed += 1
      return self._answer(500, b'{"error": "overloaded"}')
    request = urllib.request.Request(type(self).upstream + self.path[len("/v1"):], data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
      self._answer(response.status, response.read())

  def log_message(self, *args):
    pass


@pytest.mark.slow
def test_fret_through_a_server_failing_a_third_of_its_calls_completes_on_a_rerun(
    server, fret_corpus, tmp_path, capfd):
  from gecko.fret import pipeline
  from gecko.fret.config import FretConfig
  _FlakyProxy.upstream, _FlakyProxy.failing, _FlakyProxy.failed = server, True, 0
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyProxy)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    backend = llm.OpenAICompatible(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                                   model="smollm2", max_retries=0, concurrency=2)
    config = FretConfig(corpus=str(fret_corpus), output_dir=str(tmp_path), num_seeds=6,
                        num_neighbors=3, ranking="rc")
    first = pipeline.run(config, llm=backend)
    assert _FlakyProxy.failed > 0
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    call_failures = [f for f in failures if f["reason"].startswith(("LLM call failed",
                                                                    "scoring failed"))]
    assert call_failures and all("HTTP 500" in f["reason"] for f in call_failures)
    assert first["records"] + first["failures_this_run"] == 6
    assert f"{first['failures_this_run']} passages failed this run" in capfd.readouterr().err
    _FlakyProxy.failing = False
    again = pipeline.run(config, llm=backend)  # the cache keeps every call that succeeded
    assert again["records"] > first["records"]
    retried = [json.loads(line) for line in
               (tmp_path / "failures.jsonl").read_text().splitlines()][len(failures):]
    assert not [f for f in retried if "HTTP 500" in f["reason"]]
    assert again["records"] + again["failures_this_run"] == 6
  finally:
    httpd.shutdown()


def test_a_server_gets_each_prompts_own_seed_and_top_p(faulty):
  backend = llm.OpenAICompatible(base_url=faulty, model="m", concurrency=1)
  assert backend.generate(["a", "b"], temperature=0.9, top_p=0.8, seed=[5, 6]) == [" ok", " ok"]
  bodies = sorted((body for body, _ in _Faulty.seen), key=lambda b: b["prompt"])
  assert [(b["prompt"], b["seed"], b["top_p"], b["temperature"]) for b in bodies] == [
      ("a", 5, 0.8, 0.9), ("b", 6, 0.8, 0.9)]
  _Faulty.seen.clear()
  backend.generate(["c"])  # greedy: no top_p sent
  assert "top_p" not in _Faulty.seen[0][0] and "seed" not in _Faulty.seen[0][0]
