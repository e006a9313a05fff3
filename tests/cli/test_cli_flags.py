"""One flag per concept across every `cim` command, the shared option groups, `--out` everywhere, and no
command run by hand writing over the pipeline's committed reports (issues 22 and 24)."""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cim.cli import COMMANDS, FLAGS, INTERACTIVE_DIR, command_parser, main

REPO = Path(__file__).resolve().parents[2]
OLD_SPELLINGS = {old: flag for flag, olds in FLAGS.values() for old in olds}

# where a shared option means something: the command has progress bars / logs to MLflow / reads a protocol
NO_PROGRESS = {"prepare", "index", "score", "verify", "audit", "train", "ablate", "caption"}
NO_MLFLOW = {"prepare", "index", "verify", "audit", "evaluate", "caption", "compare", "train"}
PROTOCOL = {"verify", "audit", "evaluate", "prepare-train", "train", "caption", "compare", "score"}
# commands that write files (publish reads --out; serve writes nothing)
WRITES = set(COMMANDS) - {"serve"}
# commands whose default output is one of the pipeline's committed report folders
PIPELINE_OUT = {"verify": "verify.out_dir", "audit": "audit.out_dir", "evaluate": "eval.out_dir",
                "compare": "pipeline.out_dir", "caption": "pipeline.captions_dir"}


def visible_options(name: str) -> dict[str, argparse.Action]:
    """The flags `cim NAME --help` shows: option string -> its action."""
    _, parser = command_parser(name)
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def hidden_options(name: str) -> set[str]:
    _, parser = command_parser(name)
    return {s for a in parser._actions if a.help == argparse.SUPPRESS for s in a.option_strings}


def concept(flag: str) -> str:
    """A flag's concept, whatever its spelling: --out-dir / --output / --output-dir -> out, --index-dir -> index,
    --input -> captions (what is read and scored), --captions-file -> captions."""
    word = re.sub(r"-(dir|file|path|folder)$", "", flag.lstrip("-"))
    return {"output": "out", "input": "captions", "benchmarks": "benchmark"}.get(word, word)


def test_every_concept_has_one_spelling_across_commands():
    spellings: dict[str, set[str]] = {}
    for name in COMMANDS:
        for flag in visible_options(name):
            spellings.setdefault(concept(flag), set()).add(flag)
    assert {c: s for c, s in spellings.items() if len(s) > 1} == {}
    for flag, _ in FLAGS.values():
        assert spellings[concept(flag)] == {flag}
    shown = {flag for name in COMMANDS for flag in visible_options(name)}
    assert not shown & set(OLD_SPELLINGS), "an old spelling is shown in --help"


def test_old_spellings_are_hidden_aliases_of_the_same_destination():
    for name in COMMANDS:
        visible = visible_options(name)
        for old in hidden_options(name):
            assert old in OLD_SPELLINGS, f"cim {name}: hidden {old} is no declared old spelling"
            _, parser = command_parser(name)
            dest = {s: a.dest for a in parser._actions for s in a.option_strings}
            assert dest[old] == visible[OLD_SPELLINGS[old]].dest


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_shared_groups_are_present_where_they_apply(name):
    flags = visible_options(name)
    assert {"--params", "--debug", "-h"} <= set(flags)
    _, parser = command_parser(name)
    assert any(a.dest == "overrides" for a in parser._actions)
    assert ("--no-progress" in flags) == (name in NO_PROGRESS)
    assert ("--no-mlflow" in flags) == (name in NO_MLFLOW)
    assert ("--protocol" in flags) == (name in PROTOCOL)
    assert ("--out" in flags) == (name in WRITES)


def test_shared_options_are_declared_once():
    """Every spelling of FLAGS and every shared option is written in cim/cli/__init__.py only."""
    for path in (REPO / "src" / "cim" / "cli").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        for flag in ["--no-mlflow", "--no-progress", "--protocol", "--params", "--debug",
                     *(f for f, _ in FLAGS.values()), *OLD_SPELLINGS]:
            assert f'add_argument("{flag}"' not in text, f"{path.name} declares {flag} itself"


@pytest.mark.parametrize("name, argv, dest, value", [
    ("serve", ["--index-dir", "idx"], "index", "idx"),
    ("prepare-train", ["--out-dir", "o"], "out", "o"),
    ("score", ["--input", "in.jsonl", "--output", "o.jsonl"], "output", "o.jsonl"),
    ("score", ["--input", "in.jsonl", "--out", "o.jsonl"], "input", "in.jsonl"),
])
def test_an_old_spelling_still_works_and_warns_in_one_line(name, argv, dest, value, capsys):
    from cim.cli import parse

    _, parser = command_parser(name)
    args = parse(parser, argv)
    assert getattr(args, dest) == value
    notes = capsys.readouterr().err.strip().splitlines()
    old = [a for a in argv if a in OLD_SPELLINGS]
    assert len(notes) == len(old) and all("deprecated" in n and OLD_SPELLINGS[o] in n for n, o in zip(notes, old))


def test_a_required_flag_is_still_required_and_an_old_spelling_satisfies_it(capsys):
    from cim.cli import parse

    _, parser = command_parser("score")
    with pytest.raises(SystemExit) as exc:
        parse(parser, ["--captions", "in.jsonl"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
    assert parse(parser, ["--captions", "in.jsonl", "--output", "o.jsonl"]).output == "o.jsonl"


# ------------------------------------------------------------------------------------ no committed reports
class Called(Exception):
    """Raised by a stand-in stage: what the command passed it."""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working folder with the repository's params.yaml (its pipeline folders are the committed ones)."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compare_out(monkeypatch, argv) -> str:
    import cim.stages.compare

    def stage(cfg, captions, benchmark, baseline, out_dir, **kw):
        raise Called(str(out_dir))

    monkeypatch.setattr(cim.stages.compare, "compare", stage)
    with pytest.raises(Called) as got:
        main(["compare", "--captions", "a=a.jsonl", *argv])
    return got.value.args[0]


def _evaluate_out(monkeypatch, argv) -> str:
    import cim.stages.evaluate

    def stage(cfg, root=".", **kw):
        raise Called(str(cfg.eval.out_dir))

    monkeypatch.setattr(cim.stages.evaluate, "evaluate", stage)
    with pytest.raises(Called) as got:
        main(["evaluate", *argv])
    return got.value.args[0]


@pytest.mark.parametrize("run", [_compare_out, _evaluate_out])
def test_compare_and_evaluate_without_out_do_not_touch_reports(run, workspace, monkeypatch, capsys):
    name = "compare" if run is _compare_out else "evaluate"
    committed = {"compare": "reports/results", "evaluate": "reports/eval"}[name]
    assert run(monkeypatch, []) == f"{INTERACTIVE_DIR}/{name}"
    assert "note" not in capsys.readouterr().err        # a command that failed says nothing of where it wrote
    assert run(monkeypatch, ["--out", committed]) == committed            # the DVC stage names its folder
    assert run(monkeypatch, ["--out", "mine"]) == "mine"
    assert run(monkeypatch, [f"{PIPELINE_OUT[name]}={committed}"]) == committed   # so may an override
    (workspace / "other.yaml").write_text(yaml.safe_dump(
        {PIPELINE_OUT[name].split(".")[0]: {PIPELINE_OUT[name].split(".")[1]: "elsewhere"}}))
    assert run(monkeypatch, ["--params", "other.yaml"]) == "elsewhere"     # a params file naming its own folder


def test_caption_without_out_writes_under_runs(workspace, monkeypatch):
    import cim.stages.caption

    def stage(cfg, captioner, benchmark, out_path, **kw):
        raise Called(str(out_path), kw)

    monkeypatch.setattr(cim.stages.caption, "caption", stage)
    with pytest.raises(Called) as got:
        main(["caption", "--captioner", "sft", "--no-progress", "--no-mlflow"])
    assert got.value.args[0] == f"{INTERACTIVE_DIR}/caption/sft/captions.jsonl"
    assert got.value.args[1]["progress"] is False and got.value.args[1]["track"] is False


def test_runs_is_ignored_by_git():
    assert f"/{INTERACTIVE_DIR}/" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("name, argv, stage_module, stage_name", [
    ("verify", ["--no-progress", "--no-mlflow"], "cim.stages.verify", "verify"),
    ("audit", ["--no-progress", "--no-mlflow"], "cim.stages.audit", "audit"),
    ("score", ["--captions", "in.jsonl", "--out", "o.jsonl", "--no-progress"], "cim.stages.score", "score_file"),
    ("train", ["--backend", "local", "--no-progress", "--no-mlflow"], "cim.stages.train", "train"),
    ("ablate", ["beta", "--no-progress"], "cim.stages.ablate", "ablate"),
])
def test_no_progress_and_no_mlflow_reach_the_stage(name, argv, stage_module, stage_name, workspace, monkeypatch):
    import importlib

    def stage(*args, **kw):
        raise Called(kw)

    monkeypatch.setattr(importlib.import_module(stage_module), stage_name, stage)
    with pytest.raises(Called) as got:
        main([name, *argv])
    kw = got.value.args[0]
    assert kw["progress"] is False
    if "--no-mlflow" in argv:
        assert kw["track"] is False


# ------------------------------------------------------------------------------------------------ dvc.yaml
def _commands() -> dict[str, str]:
    return {name: stage["cmd"] for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}


def test_the_dvc_stages_name_the_folders_they_write():
    """A stage whose command would write under runs/ when run by hand names its committed folder with --out,
    the folder its outs list; no stage uses an old spelling."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    seen = set()
    for stage_name, stage in stages.items():
        argv = stage["cmd"].split()
        assert not set(argv) & set(OLD_SPELLINGS), stage["cmd"]
        if argv[1] not in PIPELINE_OUT:
            continue
        seen.add(argv[1])
        assert "--out" in argv, f"{stage_name}: {stage['cmd']}"
        out = argv[argv.index("--out") + 1]
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        assert any(out == o or out.startswith(o.rstrip("/") + "/") or o.startswith(out.rstrip("/") + "/")
                   for o in outs), f"{stage_name}: --out {out} is none of its outs {outs}"
    assert seen == set(PIPELINE_OUT)
    assert "--out reports/results" in stages["publish"]["cmd"]      # publish reads the folder compare wrote

