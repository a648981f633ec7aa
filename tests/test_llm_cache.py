"""The LLM cache as text: `export` writes sorted JSON lines of hashes and answers,
`merge` adds a file's calls without overwriting the cache's own, and the CLI does both."""

import json
import sqlite3

import pytest

from gecko.fret import cache as cache_lib
from gecko.fret.cache import CacheError, LLMCache, call_key


def _key(prompt):
  return call_key(backend="llama_cpp", model="m", kind="score", prompt=prompt)


def test_export_then_merge_replays_every_call_and_keeps_the_caches_own(tmp_path):
  source = LLMCache(tmp_path / "a.sqlite")
  values = {_key("p1"): [0.5, -1.25], _key("p2"): {"task": "t", "query": "q ü"},
            _key("p3"): "text"}
  for key, value in values.items():
    source.put(key, value)
  assert source.export(tmp_path / "calls.jsonl") == 3
  lines = (tmp_path / "calls.jsonl").read_text(encoding="utf-8").splitlines()
  assert [json.loads(line)["key"] for line in lines] == sorted(values)  # stable diffs
  assert "q ü" in lines[[json.loads(line)["key"] for line in lines].index(_key("p2"))]
  assert all("p1" not in line for line in lines)  # hashes, not prompts

  with LLMCache(tmp_path / "b.sqlite") as target:
    target.put(_key("p1"), [9.0])  # the cache's own answer wins
    assert target.merge(tmp_path / "calls.jsonl") == 2
    assert target.get(_key("p1")) == [9.0]
    assert target.get(_key("p2")) == values[_key("p2")] and target.get(_key("p3")) == "text"
    assert target.merge(tmp_path / "calls.jsonl") == 0 and len(target) == 3


def test_a_line_that_is_not_an_export_is_named_and_nothing_is_added(tmp_path):
  calls = tmp_path / "calls.jsonl"
  calls.write_text(json.dumps({"key": "k1", "value": 1}) + "\n" + '{"key": "k2"}\n')
  cache = LLMCache(tmp_path / "c.sqlite")
  with pytest.raises(CacheError, match=r"calls.jsonl:2 is not a line of LLMCache.export"):
    cache.merge(calls)
  assert len(cache) == 0


def test_the_cli_exports_and_merges(tmp_path, capsys):
  LLMCache(tmp_path / "a.sqlite").put(_key("p"), [1.5])
  assert cache_lib.main(["export", str(tmp_path / "a.sqlite"), str(tmp_path / "x.jsonl")]) == 0
  assert cache_lib.main(["merge", str(tmp_path / "b.sqlite"), str(tmp_path / "x.jsonl")]) == 0
  assert "merge: 1 calls (1 in" in capsys.readouterr().out
  rows = sqlite3.connect(tmp_path / "b.sqlite").execute("SELECT key, value FROM calls").fetchall()
  assert rows == [(_key("p"), "[1.5]")]
  with pytest.raises(SystemExit):
    cache_lib.main(["export", str(tmp_path / "missing.sqlite"), str(tmp_path / "y.jsonl")])
  assert "does not exist" in capsys.readouterr().err
