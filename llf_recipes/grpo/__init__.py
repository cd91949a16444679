"""GRPO's own code: the stage's settings (settings.py) and the reward functions both engines score with (rewards.py).

How TRL or EasyR1 runs a GRPO stage lives with that engine (llf_recipes/engines/trl, llf_recipes/engines/easyr1;
planning in llf_recipes/engines/grpo_plan.py). Nothing here imports torch at module level.
"""
