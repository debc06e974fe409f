import pytest

from rlhf.config import ConfigError, dump_config, field_docs, load_config, save_config
from rlhf.generate import GenerateConfig


def test_yaml_then_overrides_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("num_completions: 2\nsampling:\n  temperature: 0.5\nlimit: 7\n")
    cfg = load_config(GenerateConfig, f, ["sampling.top_p=0.5", "limit=3"], seed=9)
    assert cfg.num_completions == 2 and cfg.limit == 3 and cfg.seed == 9
    # a partial nested section keeps the stage's own defaults for the other nested keys
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_new_tokens) == (0.5, 0.5, 64)


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("num_completionz: 2\n", [], r"c\.yaml: unknown key\(s\) \['num_completionz'\]"),
        ("num_completions: two\n", [], r"num_completions: expected an integer"),
        ("sampling: 3\n", [], r"sampling: expected a mapping"),
        ("- a\n", [], "top level must be a mapping"),
        ("a: [\n", [], "invalid YAML"),
        ("", ["sampling.nope=1"], r"sampling: unknown key"),
        ("", ["limit"], "expected key=value"),
        ("", ["num_completions=0"], "num_completions must be >= 1"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(GenerateConfig, f, overrides)


def test_saved_config_round_trips_with_docs(tmp_path):
    cfg = load_config(GenerateConfig, None, ["sampling.temperature=0.3", "system_prompt=Be kind."])
    path = save_config(cfg, tmp_path / "generate.yaml")
    text = path.read_text()
    assert "# Completions sampled per prompt." in text
    assert load_config(GenerateConfig, path) == cfg
    assert field_docs(GenerateConfig)["seed"].startswith("Random seed")
    assert dump_config(cfg) == text


def test_a_partial_override_two_levels_down_keeps_the_parents_defaults():
    # DemoConfig's ppo section samples at temperature 0.7 (its own default), PPOConfig's class default is 1.0:
    # overriding only ppo.sampling.max_new_tokens must keep 0.7.
    from rlhf.demo import DemoConfig

    cfg = load_config(DemoConfig, None, ["ppo.sampling.max_new_tokens=8"])
    assert cfg.ppo.sampling.max_new_tokens == 8 and cfg.ppo.sampling.temperature == 0.7
    assert cfg.ppo.max_steps == DemoConfig().ppo.max_steps
