"""Evaluating runs: training metrics from trainer_state, held-out loss, perplexity, preference accuracy, samples.

`training` reads files only; `heldout`, `scoring` and `session` import torch, transformers and LLaMA-Factory, and are
imported only when a model is scored.
"""
