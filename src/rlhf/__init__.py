"""rlhf: align language models with human preferences, from labeling to PPO."""

__version__ = "0.1.0"
