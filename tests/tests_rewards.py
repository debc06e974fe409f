"""Plain-function rewards importable by spec (`python:tests_rewards:NAME`) in tests."""


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]
