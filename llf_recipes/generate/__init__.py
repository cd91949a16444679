"""Batch generation over a dataset's prompts with a run's model, and what is built from the answers."""
