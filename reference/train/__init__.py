"""MovieLens-100K pipeline: data, item embeddings, semantic IDs, OneRec training,
evaluation against popularity and SASRec, export. Entry point: `run_all.py`."""
