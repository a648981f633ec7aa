"""Gecko: versatile text embeddings distilled from large language models, in JAX.

`import gecko` is light: it imports neither TensorFlow nor the models. Use
`gecko.encode.encode` to embed texts, `gecko.models` for the Flax modules, and
`gecko.data.vocabularies` (TensorFlow) for SeqIO pipelines.
"""

__version__ = "0.1.0"
