import subprocess
import sys

import pytest

from cim.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


HEAVY = ("torch", "transformers", "faiss", "mlflow", "sentence_transformers", "open_clip")
HELP_AND_MODULES = """
import contextlib, io, json, sys
from cim.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main([sys.argv[1], "--help"])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "help": out.getvalue(), "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_it_imports_no_heavy_library(name):
    """`cim <cmd> --help` answers without importing torch, transformers, faiss or mlflow (a deterministic
    stand-in for "help is fast": importing torch alone takes seconds)."""
    import json

    proc = subprocess.run([sys.executable, "-c", HELP_AND_MODULES, name], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["code"] == 0
    assert f"cim {name}" in result["help"] and "key=value" in result["help"] and "--debug" in result["help"]
    assert result["heavy"] == [], f"`cim {name} --help` imported {result['heavy']}"


def test_the_console_script_answers_help():
    proc = subprocess.run([sys.executable, "-m", "cim.cli", "score", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "usage: cim score" in proc.stdout


def test_the_index_package_exports_its_names_on_first_use():
    import cim.index

    from cim.index import CorpusIndex, IndexMismatch, build_index

    assert CorpusIndex.__module__ == "cim.index.store" and issubclass(IndexMismatch, ValueError)
    assert callable(build_index) and {"CorpusIndex", "recall_at_k"} <= set(dir(cim.index))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cim.index.nope  # noqa: B018
