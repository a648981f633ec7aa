"""The input side: the batch contract (`features`), the one input format, tokenizers and
SeqIO vocabularies, JSONL, SeqIO sources/preprocessors/feature converter, and the two
batch sources (`seqio_batches`, `pairs`). Imports nothing of gecko's outside `gecko.data`."""
