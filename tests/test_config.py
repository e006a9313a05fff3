import pytest

from cim.config import ConfigError, flatten, load_config


def test_defaults_without_file(tmp_path):
    cfg = load_config(tmp_path / "absent.yaml")
    assert cfg.reward.top_k == 5 and cfg.reward.beta == 1.0 and cfg.reward.decay == 0.5


def test_file_and_overrides(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("reward:\n  beta: 0.5\nindex:\n  kind: hnsw\n")
    cfg = load_config(path, ["reward.top_k=7", "encoders.text.model=/models/mpnet"])
    assert (cfg.reward.beta, cfg.reward.top_k, cfg.index.kind) == (0.5, 7, "hnsw")
    assert cfg.encoders.text.model == "/models/mpnet"


def test_unknown_key_names_full_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("reward:\n  betta: 0.5\n")
    with pytest.raises(ConfigError, match=r"reward\.betta"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"encoders\.text\.nme"):
        load_config(None, ["encoders.text.nme=x"])


def test_wrong_type_names_full_path():
    with pytest.raises(ConfigError, match=r"reward\.top_k"):
        load_config(None, ["reward.top_k=five"])


def test_bad_choice_and_bad_override_syntax():
    with pytest.raises(ConfigError, match="reward.mode"):
        load_config(None, ["reward.mode=sum"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["reward.beta"])


def test_flatten_gives_dotted_keys():
    flat = flatten(load_config(None))
    assert flat["reward.beta"] == 1.0 and flat["encoders.text.name"] == "sentence-transformers"
