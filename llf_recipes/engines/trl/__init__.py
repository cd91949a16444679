"""TRL's GRPOTrainer as the engine of single-node GRPO (CPU too): args.py turns a stage's settings into GRPOConfig
and LoRA arguments, plan.py plans and writes a stage, backend.py is the program the stage runs
(`python -m llf_recipes.engines.trl.backend CONFIG`)."""
