"""Our Flax all-MiniLM-L6-v2 matches sentence-transformers (reference vectors in fixtures/)."""

import pathlib

import numpy as np

from gecko.encode import encode

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"


def test_minilm_matches_sentence_transformers(minilm):
  reference = np.load(FIXTURE)
  texts = [str(t) for t in reference["texts"]]
  assert "" in texts and any(len(minilm.tokenizer.encode_batch([t])[0]) == 256 for t in texts)
  for batch_size in (1, 5):
    ours = encode(texts, model=minilm, batch_size=batch_size)
    cosine = np.sum(ours * reference["embeddings"], axis=-1)
    worst = int(np.argmin(cosine))
    assert cosine.min() >= 0.9999, f"cosine {cosine[worst]:.6f} for {texts[worst][:50]!r}"
