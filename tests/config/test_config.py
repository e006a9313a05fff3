import pytest

from cim.config import ConfigError, flatten, load_config


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg.reward.top_k == 5 and cfg.reward.beta == 1.0 and cfg.reward.decay == 0.5


@pytest.mark.parametrize("content, problem", [
    (None, "does not exist"),
    ("folder", "is a folder"),
    (b"reward: [1\n", "not valid YAML (line 2"),
    (b"reward:\n  beta: 0.5\n bad: 1\n", "not valid YAML (line 3"),
    (b"reward:\n  mode: \xffboth\n", "not UTF-8 text (invalid start byte 0xff at byte 16)"),
    (b"- reward\n", "holds a list"),
])
def test_a_params_file_that_cannot_be_read_is_an_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "params.yaml"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match="params file .*params.yaml") as exc:
        load_config(path)
    assert problem in str(exc.value)


def test_an_empty_params_file_means_the_defaults(tmp_path):
    (tmp_path / "params.yaml").write_text("# nothing set\n")
    assert load_config(tmp_path / "params.yaml").reward.top_k == 5


def test_an_omegaconf_error_is_one_line():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["reward.top_k=five"])
    assert "\n" not in str(exc.value) and str(exc.value).startswith("reward.top_k: ")


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


def test_names_of_parts_are_checked_against_their_registries():
    from cim.config import check_names, name_keys

    assert name_keys()["eval.judge.name"] == "JUDGES" and name_keys()["eval.metrics"] == "METRICS"
    check_names(load_config(None, ["eval.judge.name=lm", "eval.metrics=[capture,toy]"]), "eval.judge.name")
    with pytest.raises(ConfigError, match="eval.metrics='captur' is not a known metric; known: bleu_meteor, "):
        check_names(load_config(None, ["eval.metrics=[capture,captur]"]), "eval.metrics")
    with pytest.raises(ConfigError, match="eval.judge.name='gpt' is not a known judge; known: lm, qwen3, triples"):
        check_names(load_config(None, ["eval.judge.name=gpt"]))
    with pytest.raises(ConfigError, match="encoders.image.name='vit' is not a known image encoder; known: dinov3, "
                                          "efficientnet-lite, open_clip"):
        check_names(load_config(None, ["encoders.image.name=vit"]), "encoders.image.name")
    with pytest.raises(ConfigError, match=r"eval.captioner.name='gpt4' is not a known captioner; known: file, hf, "
                                          r"kkk5/CIM-InternVL2-8B, .*kkk5/CIM-Qwen2.5-VL-7B, levels, local, vllm"):
        check_names(load_config(None, ["eval.captioner.name=gpt4"]), "eval.captioner.name")


def test_closed_choices_are_declared_once_on_the_schema():
    from cim.config import choices

    assert choices("reward.mode") == ("both", "grc", "qir") and choices("train.backend") == ("local", "verl", "trl")
    with pytest.raises(ConfigError, match="index.kind='flat' is not one of exact, ivf, hnsw"):
        load_config(None, ["index.kind=flat"])
    with pytest.raises(KeyError):
        choices("reward.beta")


def test_import_and_load_stay_light():
    from support.imports import loaded_after

    assert loaded_after("from cim.config import load_config; load_config(None, ['reward.mode=grc'])",
                        ("torch", "spacy", "transformers", "sentence_transformers", "nltk", "scipy")) == []


def test_the_params_files_variants_replace_the_defaults(tmp_path):
    """pipeline.variants is the params file's own mapping (a row it leaves out is gone); overrides still add."""
    p = tmp_path / "params.yaml"
    p.write_text("pipeline:\n  variants:\n    only: {reward.mode: grc}\n")
    assert list(load_config(p).pipeline.variants) == ["only"]
    assert list(load_config(p, ["pipeline.variants.more={reward.mode: qir}"]).pipeline.variants) == ["only", "more"]
    assert list(load_config(None).pipeline.variants) == ["cim", "cim-grc", "cim-qir"]   # the schema's: the paper's
    p.write_text("pipeline:\n  seeds: [1]\n")                                            # not given: the defaults
    assert list(load_config(p).pipeline.variants) == ["cim", "cim-grc", "cim-qir"]


def test_a_protocol_override_applies_the_protocols_params_under_the_others():
    from cim.config import with_overrides

    cfg = load_config(None)
    guarded = with_overrides(cfg, {"protocol": "guarded", "reward.guard": {"length": {"weight": 0.5}}})
    assert guarded.protocol == "guarded" and list(guarded.reward.guards) == ["repetition", "length", "fluency"]
    assert guarded.reward.guard.length.weight == 0.5                     # the other overrides still win
    assert list(with_overrides(cfg, ["protocol=guarded"]).reward.guards) == ["repetition", "length", "fluency"]
    # the same protocol as the config's is not applied again (an override that won over it keeps winning)
    mine = load_config(None, ["protocol=guarded", "reward.guards=[length]"])
    assert list(with_overrides(mine, {"protocol": "guarded"}).reward.guards) == ["length"]
    with pytest.raises(ConfigError, match="nope"):
        with_overrides(cfg, {"protocol": "nope"})
