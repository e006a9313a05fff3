"""Each default once: the schema (:mod:`cim.config.schema`) holds every default of a config key, the reward's
settings are one dict (:func:`cim.reward.settings.reward_settings`) wherever they are recorded, and "wait
until healthy", the ``protocol=`` override and the ablations' defaults each live in one place."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from cim.config import choices, load_config
from cim.config.schema import AUDIT_AXES, AblateConfig, AuditConfig, RewardConfig, RewardServiceConfig
from cim.reward.settings import SETTINGS, reward_settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "src" / "cim").rglob("*.py"), *(ROOT / "flows").glob("*.py")])
SCHEMA = ROOT / "src" / "cim" / "config" / "schema.py"

# the service's keys that the clients and the server take as keyword arguments
SERVICE = ("timeout_s", "retries", "max_request_items", "backoff_s", "deadline_s", "cooldown_s", "max_connections",
           "header_timeout_s", "body_timeout_s", "startup_timeout_s", "max_batch")
# parameter names whose default must come from the schema, never a literal in a signature
GUARDED = {*SETTINGS, *SERVICE, "n_boot", "on_missing", "window_s", "max_request_bytes", "interval_s", "kinds"}
ALLOWED = {"io.py atomic_open(mode='w')"}      # a file's open mode, not reward.mode


_SPELLED = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.List, ast.Tuple, ast.Load)


def _literal(node: ast.AST) -> bool:
    """A default spelled out (a constant other than None, or arithmetic over constants), not read from the
    schema."""
    if isinstance(node, ast.Constant) and node.value is None:
        return False
    return all(isinstance(n, _SPELLED) for n in ast.walk(node))


def _literal_defaults(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg in GUARDED and _literal(default):
                    yield f"{path.name}:{node.lineno} {node.name}({arg.arg}={ast.unparse(default)})"


def test_no_signature_restates_a_config_default():
    """Every function parameter named like a reward / service / bootstrap / manifest key gets its default from
    the schema (or none): a literal there is a second default that drifts."""
    found = [hit for path in SOURCES if path != SCHEMA and "smoke" not in path.parts for hit in _literal_defaults(path)
             if hit.split(":")[0] + " " + hit.split(" ", 1)[1] not in ALLOWED]
    assert not found, found


def test_the_scanner_sees_a_literal_default(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(a, *, top_k=5, retries=None, beta=-1.0, window_s=5 / 1e3, decay=D.decay, seed=0):\n"
                     "    pass\n")
    assert [h.split(" ", 1)[1] for h in _literal_defaults(probe)] == [
        "f(top_k=5)", "f(beta=-1.0)", "f(window_s=5 / 1000.0)"]


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    out |= {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)}
    return out


@pytest.mark.parametrize("text", ["reports/ablations", "data/ablations"])
def test_ablation_folders_are_named_once(text):
    """The ablations' folders are ``ablate.out_dir`` / ``ablate.work_dir`` (docstrings may mention them)."""
    holders = [p.relative_to(ROOT).as_posix() for p in SOURCES if text in _string_literals(p)]
    assert holders == ["src/cim/config/schema.py"], holders


def test_protocol_override_is_built_once():
    holders = [p.relative_to(ROOT).as_posix() for p in SOURCES
               if any(s.startswith("f'protocol=") or s.startswith('f"protocol=') for s in _string_literals(p))]
    assert holders == ["src/cim/protocols.py"], holders
    from cim.protocols import with_protocol

    assert with_protocol("official", ["reward.top_k=5"]) == ["protocol=official", "reward.top_k=5"]
    assert with_protocol(None, None) == [] and with_protocol("", ("a=1",)) == ["a=1"]


def test_no_reward_settings_dict_outside_the_reward():
    """A dict literal with the reward's keys is the settings dict written again: use reward_settings."""
    found = []
    for path in SOURCES:
        if path.parent.name == "reward" or "smoke" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if len(keys & set(SETTINGS)) >= 2:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_every_settings_consumer_records_exactly_the_scorers_settings(tiny_cfg, tiny_scorer):
    from cim.eval.quality_order import settings as verify_settings
    from cim.service.server import scorer_info
    from cim.train.local.run import plan as local_plan

    expected = tiny_scorer.settings()
    assert tuple(expected) == SETTINGS and expected == reward_settings(tiny_cfg.reward)
    assert scorer_info(tiny_scorer)["reward"] == expected                         # the service's /health
    assert verify_settings(tiny_cfg, tiny_scorer)["reward"] == expected          # reports/verify/settings.json
    assert local_plan(tiny_cfg)["reward"] == expected                            # `cim train --backend local`
    assert reward_settings(load_config(None).reward) == {f: getattr(RewardConfig(), f) for f in SETTINGS}


def test_verl_plan_and_metrics_use_the_one_settings_dict():
    """The verl plan and the evaluation's CIM protocol (no scorer or GPU needed to read their code)."""
    for module, call in (("train/verl/plan.py", "reward_settings(cfg.reward)"), ("eval/metrics.py", "scorer.settings()"),
                         ("audit/run.py", "scorer.settings()")):
        assert call in (ROOT / "src" / "cim" / module).read_text(), module


def test_scorer_and_equations_take_the_schemas_defaults():
    from cim.reward import equations
    from cim.reward.scorer import Scorer

    params = inspect.signature(Scorer).parameters
    assert {k: params[k].default for k in SETTINGS} == {k: getattr(RewardConfig(), k) for k in SETTINGS}
    for fn, names in ((equations.qir, ["decay"]), (equations.rank_weights, ["decay"]),
                      (equations.cim_reward, ["beta", "mode"])):
        sig = inspect.signature(fn).parameters
        assert all(sig[n].default is inspect.Parameter.empty for n in names), fn.__name__


def test_service_defaults_are_the_schemas():
    from cim.service.client import AsyncRewardClient, RewardClient
    from cim.service.server import RewardService, ServerHandle, build_app, serve_forever

    s = RewardServiceConfig()
    for fn in (RewardClient, AsyncRewardClient, build_app, ServerHandle, serve_forever, RewardService):
        for name, p in inspect.signature(fn).parameters.items():
            if name in SERVICE:
                assert p.default == getattr(s, name), f"{fn.__name__}({name})"
    assert inspect.signature(build_app).parameters["max_request_bytes"].default == int(s.max_request_mb * (1 << 20))
    assert inspect.signature(RewardService).parameters["window_s"].default == s.batch_window_ms / 1e3


def test_wait_healthy_is_the_one_wait():
    from cim.service.client import ServiceError, wait_healthy

    asked = []

    def ask(url):
        asked.append(url)
        if url == "b" and asked.count("b") < 2:
            raise ServiceError("down")
        return {"url": url}

    assert wait_healthy(ask, ["a", "b"], timeout_s=5, interval_s=0.01) == [{"url": "a"}, {"url": "b"}]
    assert asked == ["a", "b", "b"]                                   # a ready replica is not asked again
    def down(url):
        asked.append(url)
        raise ServiceError("down")

    asked.clear()
    with pytest.raises(ServiceError, match="at a, b not ready after 0 s"):
        wait_healthy(down, ["a", "b"], timeout_s=0, interval_s=0.01)
    assert asked == ["a", "b"]                                        # timeout 0: each asked once
    asked.clear()
    with pytest.raises(ServiceError, match="exited"):
        wait_healthy(ask, ["a"], 5, alive=lambda: (_ for _ in ()).throw(ServiceError("exited")))
    assert asked == []                                                # alive runs before each round
    from cim.service import process
    from cim.service.client import AsyncRewardClient, RewardClient

    for fn in (RewardClient.wait_ready, AsyncRewardClient.wait_ready, process.start):
        source = inspect.getsource(fn)
        loops = [n for n in ast.walk(ast.parse(inspect.cleandoc("\n" + source))) if isinstance(n, ast.While)]
        assert "wait_healthy(" in source and not loops, fn.__qualname__


def test_audit_kinds_are_the_schemas():
    from cim.audit.settings import AXES, KINDS

    assert AXES is AUDIT_AXES and AuditConfig().kinds == list(KINDS)


def test_bootstrap_count_is_pipeline_n_boot():
    from cim.eval import intervals
    from cim.pipeline.table import comparison

    assert not hasattr(intervals, "DEFAULT_BOOT")
    assert inspect.signature(comparison).parameters["n_boot"].default is inspect.Parameter.empty
    assert inspect.signature(intervals.draws).parameters["n_boot"].default is inspect.Parameter.empty


def test_on_missing_is_the_schemas(tmp_path):
    import argparse

    from cim.cli import manifest as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "on_missing")
    assert tuple(action.choices) == choices("manifest.on_missing") and action.default is None
    assert load_config(None).manifest.on_missing == "skip"


def test_ablate_defaults_come_from_the_config():
    import argparse

    from cim.ablate.axes import defaults, variants
    from cim.cli import ablate as cli
    from cim.stages.ablate import ablate

    cfg = load_config(None)
    a = AblateConfig()
    assert [v.name for v in variants(cfg, "components")] == a.components
    assert [v.fields["beta"] for v in variants(cfg, "beta")] == a.beta
    assert defaults(cfg, "encoders") == [",".join(a.text), ",".join(a.image)]
    assert [v.name for v in variants(cfg, "encoders", ["mpnet", None])] == [f"mpnet+{i}" for i in a.image]
    changed = load_config(None, ["ablate.beta=[0.5,2]", "ablate.scale=[0,1]"])
    assert [v.name for v in variants(changed, "beta")] == ["beta=0.5", "beta=2"]
    assert [v.corpus for v in variants(changed, "scale")] == [0.0, 1.0]
    assert [v.name for v in variants(cfg, "aggregate")] == a.aggregate == list(choices("reward.aggregate"))
    assert [v.name for v in variants(load_config(None, ["ablate.aggregate=[gdpo]"]), "aggregate")] == ["gdpo"]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert all(a.default is None for a in parser._actions if a.dest in ("out", "work", "text", "image"))
    sig = inspect.signature(ablate).parameters
    assert sig["out_dir"].default is None and sig["work_dir"].default is None
