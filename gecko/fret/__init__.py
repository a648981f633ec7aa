"""The FRet pipeline (LLM-generated queries, LLM-relabelled positives and negatives)."""
