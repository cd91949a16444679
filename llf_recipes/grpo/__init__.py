"""GRPO: one stage format, two engines (EasyR1 for clusters, TRL for one node), one set of reward functions.

Nothing here imports torch at module level: planning a GRPO stage is as quick as planning any other stage.
"""
