"""llf-recipes: reproducible LLaMA-Factory fine-tuning, from dataset to merged model."""

__version__ = "0.1.0"
