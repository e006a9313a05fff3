"""The DVC pipeline: every stage's deps name the code its command runs; the whole pipeline is reproducible
(no timestamps, absolute paths or run ids in outputs; pinned CPU kernels; faiss quiet).

The deps check runs each stage's own ``cmd`` from dvc.yaml on a tiny world (a real run, in a subprocess) and
records which ``cim`` modules the process imported; a module whose file no dep of that stage covers means a
change to that code would not re-run the stage.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.tiny import TINY, params_with_rows

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# imported by every stage but cannot change what a stage writes: argument dispatch, MLflow records,
# exception classes, name lookup, the console's third-party chatter, the training sentinels (MLflow metrics and
# tags only, their own generators: tests/train/test_sentinels.py trains the same bytes with them on and off;
# their hack probe also imports cim.audit and cim.eval.parsers, from GRPO step 5 on)
NO_OUTPUT_EFFECT = {"cim/cli/__init__.py", "cim/tracking.py", "cim/errors.py", "cim/registry.py",
                    "cim/stages/publish.py", "cim/quiet.py", "cim/train/sentinels.py"}
# the GRPO rows the stages run for: one of each kind of training (the paper's reward, its guards, GDPO's
# aggregation); cim-grc / cim-qir differ from cim in a value only. cim and cim-gdpo feed ablate-aggregate.
STAGE_ROWS = ("cim", "cim-guard", "cim-gdpo")
RECORDER = textwrap.dedent("""
    # run `cim <argv>` and write the source files of every cim module it imported (relative to src/)
    import atexit, json, sys
    out = sys.argv[1]

    def dump():
        files = sorted({m.__file__ for name, m in list(sys.modules.items())
                        if (name == "cim" or name.startswith("cim.")) and getattr(m, "__file__", None)})
        json.dump(files, open(out, "w"))

    atexit.register(dump)
    from cim.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _stages() -> dict:
    """dvc.yaml's stages as DVC resolves them (``matrix`` expanded: ``train@cim-0``), in file order:
    ``{name: {"cmd", "deps", "always_changed"}}``."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {st.addressing: {"cmd": st.cmd, "deps": [d.def_path for d in st.deps],
                                "always_changed": st.always_changed} for st in repo.index.stages}


def test_matrix_stages_are_the_pipeline_runs():
    """The train/caption stages are params.yaml's variants x seeds, named and placed as the pipeline's runs."""
    from cim.config import load_config
    from cim.pipeline.variants import runs

    cfg = load_config(REPO / "params.yaml")
    stages = _stages()
    grpo = [run for row, row_runs in runs(cfg).items() if row != cfg.pipeline.sft for run in row_runs]
    assert sorted(n for n in stages if n.startswith("train@")) == \
        sorted(f"train@{r.rsplit('-s', 1)[0]}-{r.rsplit('-s', 1)[1]}" for r in grpo)
    assert sorted(st["cmd"].split("--captioner ")[1].split()[0] for n, st in stages.items() if n.startswith("caption")) == \
        sorted([cfg.pipeline.sft, *grpo])
    assert "reports/captions" in stages["compare"]["deps"]
    assert len(cfg.pipeline.seeds) >= 3


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_covered_matches_files_and_folders():
    assert _covered("src/cim/index/build.py", ["src/cim/index"])
    assert _covered("src/cim/train/local/run.py", ["src/cim/train/local"])
    assert not _covered("src/cim/indexer.py", ["src/cim/index"])
    assert not _covered("src/cim/train/localx.py", ["src/cim/train/local"])


@pytest.fixture(scope="module")
def imported_by_stage(tmp_path_factory):
    """stage -> the repository paths of the cim modules its command imported when run for real."""
    work = tmp_path_factory.mktemp("pipeline")
    params_with_rows(REPO / "params.yaml", work / "params.yaml", STAGE_ROWS)
    shutil.copytree(REPO / "configs", work / "configs")
    recorder = work / "recorder.py"
    recorder.write_text(RECORDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    found = {}
    for name, stage in _stages().items():          # dvc.yaml lists the stages in a runnable order
        if "@" in name and (not name.endswith("-0") or name.split("@")[1].rsplit("-", 1)[0] not in STAGE_ROWS):
            continue                               # one run per matrix stage and kind of row (TINY has seed 0)
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "cim", stage["cmd"]
        record = work / f"{name}.json"
        # the audits (`audit`, `audit-guarded`) import the same modules on 20 captions as on all 120
        small = ["audit.sample=20"] if argv[1] == "audit" else []
        proc = subprocess.run([sys.executable, str(recorder), str(record), *argv[1:], *TINY, *small], cwd=work,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        files = json.loads(record.read_text())
        found[name] = sorted(Path(f).resolve().relative_to(SRC.resolve()).as_posix() for f in files)
    return found


@pytest.mark.slow
def test_every_stage_depends_on_the_code_it_runs(imported_by_stage):
    missing = {}
    for name, stage in _stages().items():
        if name not in imported_by_stage or stage["always_changed"]:     # runs every time: no stale outputs
            continue
        deps = [str(d) for d in stage.get("deps", [])]
        modules = imported_by_stage[name]
        assert any(m.startswith("cim/") for m in modules) and "cim/config/schema.py" in modules, name
        lacking = [f"src/{m}" for m in modules if m not in NO_OUTPUT_EFFECT and not _covered(f"src/{m}", deps)]
        stale = [d for d in deps if d.startswith("src/") and not (REPO / d).exists()]
        if lacking or stale:
            missing[name] = {"not in deps": lacking, "deps that do not exist": stale}
    assert not missing, "dvc.yaml misses code a stage runs:\n" + json.dumps(missing, indent=1)


def test_cim_pins_the_cpu_kernels_before_torch_loads():
    code = "import cim, torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env["PYTHONPATH"] = str(SRC)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import torch

    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX"):
        pytest.skip("a CPU without AVX2")
    assert out.stdout.strip() == "AVX2"


def test_faiss_loader_is_quiet_in_a_stage_log():
    """The stages log at INFO; importing faiss through cim.index must not print faiss's loader lines."""
    code = ("import logging; logging.basicConfig(level=logging.INFO); import cim.index; "
            "from cim.index import build_faiss_index; import numpy as np; "
            "build_faiss_index(np.eye(4, dtype=np.float32), 'exact')")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "faiss.loader" not in out.stderr, out.stderr


def test_deterministic_restores_the_callers_torch_settings():
    import torch

    from cim.determinism import deterministic

    threads, mode = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic(3, threads=1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        first = torch.rand(3)
    with deterministic(3, threads=1):
        assert torch.equal(torch.rand(3), first)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == mode


@pytest.mark.parametrize("changes", [False, True])
def test_ci_runs_the_tests_then_fails_when_make_run_changes_committed_files(tmp_path, changes):
    """.ci/run in a throw-away git clone, with `make` replaced by a script that records its targets and,
    in the failing case, changes a committed file during `make run` (as a non-reproducible stage would)."""
    repo = tmp_path / "clone"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text("#!/usr/bin/env bash\necho \"$1\" >> \"$MAKE_LOG\"\n"
                    "if [ \"$1\" = run ] && [ -n \"$CHANGE\" ]; then echo 'md5: changed' >> dvc.lock; fi\n")
    make.chmod(0o755)
    log = tmp_path / "make.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MAKE_LOG": str(log),
           "CHANGE": "1" if changes else ""}
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert log.read_text().split() == ["test", "run"]
    if changes:
        assert proc.returncode == 1
        assert "M dvc.lock" in proc.stderr and "+md5: changed" in proc.stderr      # names the file, shows the diff
    else:
        assert proc.returncode == 0, proc.stderr
