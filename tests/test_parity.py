"""Our Flax all-MiniLM-L6-v2 matches sentence-transformers (reference vectors in fixtures/)."""

import pathlib

import numpy as np

from gecko.encode import encode

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"
TOLERANCE = 1e-5  # largest element difference of two unit vectors


def test_minilm_matches_sentence_transformers(minilm):
  reference = np.load(FIXTURE)
  texts = [str(t) for t in reference["texts"]]
  assert "" in texts and any(len(minilm.tokenizer.encode_batch([t])[0]) == 256 for t in texts)
  for batch_size in (1, 5):
    ours = encode(texts, model=minilm, batch_size=batch_size)
    # float32 against float32 agrees to about 2e-7; a tanh GELU or a LayerNorm epsilon
    # of 1e-5 instead of 1e-12 moves an element by about 2e-4 (and keeps cosine > 0.99999).
    gap = np.abs(ours - reference["embeddings"]).max(axis=-1)
    worst = int(np.argmax(gap))
    assert gap.max() <= TOLERANCE, f"off by {gap[worst]:.2e} for {texts[worst][:50]!r}"
