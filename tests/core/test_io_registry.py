"""The shared runtime helpers: atomic writes (whole or nothing), jsonl reading, and the name registry."""
from __future__ import annotations

import hashlib
import json

import pytest

from cim.io import atomic_dir, atomic_open, atomic_write, atomic_write_json, cache_dir, read_jsonl, write_jsonl
from cim.registry import DuplicateName, Registry, UnknownName


def test_atomic_write_returns_sha256_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "x.bin"
    digest = atomic_write(path, lambda f: (f.write(b"ab"), f.write(b"cd")))
    assert path.read_bytes() == b"abcd"
    assert digest == hashlib.sha256(b"abcd").hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("new, half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_json_round_trip(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"é": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {"é": [1, 2]}
    assert "é" in (tmp_path / "x.json").read_text(encoding="utf-8")


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as d:
        (d / "state.pt").write_text("1")
    assert (final / "state.pt").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as d:
            (d / "state.pt").write_text("2")
            raise KeyboardInterrupt
    assert (final / "state.pt").read_text() == "1"
    with atomic_dir(final) as d:
        (d / "other").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["other"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_jsonl_round_trip_and_errors_name_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl([{"a": 1}, {"a": 2}], path) == 2
    path.write_text(path.read_text() + "\n{bad\n")
    rows = read_jsonl(path)
    assert next(rows) == (1, {"a": 1})
    assert next(rows) == (2, {"a": 2})
    with pytest.raises(ValueError, match=r"rows.jsonl:4: malformed JSON"):
        next(rows)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CIM_CACHE_DIR", str(tmp_path))
    assert cache_dir("models") == tmp_path / "models"


def test_registry_refuses_duplicates_and_lists_known_names():
    reg = Registry("toy part", config_key="toy.name")

    @reg.register("a")
    def a():
        return "A"

    @reg.register("b", fixed=2)
    def b(x, fixed):
        return x * fixed

    assert reg.names() == ["a", "b"] and "a" in reg and reg.get("a")() == "A"
    assert reg.info("b") == {"fixed": 2} and reg.build("b", 3) == 6            # the entry with its info
    reg.register("a")(a)      # the same entry again is not a conflict
    with pytest.raises(DuplicateName, match="'a' is already registered"):
        reg.register("a")(lambda: "other")
    with pytest.raises(UnknownName, match=r"toy.name='c' is not a known toy part; known: a, b"):
        reg.get("c")
    reg.unregister("b")
    assert reg.names() == ["a"]


def test_a_reimported_module_registers_harmlessly_by_qualified_name(tmp_path, monkeypatch):
    """A module imported twice (Ray workers re-import) defines new function objects of the same qualified
    name: registering them again replaces the entry instead of raising."""
    import importlib
    import sys

    (tmp_path / "toy_reimport.py").write_text(
        "from cim.plugins import METRICS\n"
        "@METRICS.register('toy_reimport', columns=[('toy_reimport', 'T', False)])\n"
        "def toy(ev, bench, refs, captions, res):\n    res.metrics['toy_reimport'] = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from cim.plugins import METRICS

    try:
        first = importlib.import_module("toy_reimport")
        del sys.modules["toy_reimport"]
        second = importlib.import_module("toy_reimport")
        assert first.toy is not second.toy and METRICS.get("toy_reimport") is second.toy
        assert METRICS.owner("toy_reimport") == "toy_reimport.toy"
    finally:
        METRICS.unregister("toy_reimport")
        sys.modules.pop("toy_reimport", None)


def test_registry_imports_its_modules_on_first_read():
    import sys

    reg = Registry("module test", modules=("json.tool",))
    sys.modules.pop("json.tool", None)
    assert "json.tool" not in sys.modules
    reg.names()
    assert "json.tool" in sys.modules


def test_every_builtin_entry_is_registered_by_one_of_its_registrys_modules():
    """Each entry is declared once, by its decorator, in a module its registry lists (nowhere else)."""
    from cim.plugins import REGISTRIES
    from cim.registry import group_modules

    for reg in REGISTRIES:
        owners = {name: reg.owner(name) for name in reg.names()}
        assert owners, reg.kind
        listed = reg.modules + group_modules(reg.group)     # its modules, and its entry-point group's built-ins
        assert all(any(o.startswith(m + ".") for m in listed) for o in owners.values()), (reg.kind, owners)
    from cim.eval.released import RELEASES
    from cim.plugins import CAPTIONERS

    assert set(RELEASES) <= set(CAPTIONERS.names())          # the released checkpoints: one table, registered


def test_config_check_imports_no_plugin_module():
    """Loading a config checks every closed choice without importing an encoder, parser, judge or metric (the
    names of those parts are checked by the stage that uses them)."""
    import subprocess
    import sys

    code = ("import sys; from cim.config import load_config; load_config(None, []); "
            "print(sorted(m for m in sys.modules if m.startswith(('cim.eval', 'cim.encoders.', 'cim.data.adapters', 'cim.reward'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_reward_modes_the_schema_declares_are_the_modes_the_equations_compute():
    import torch

    from cim.config import choices
    from cim.reward.equations import cim_reward

    grc, qir = torch.tensor([0.5]), torch.tensor([0.25])
    assert {m: float(cim_reward(grc, qir, beta=1.0, mode=m)) for m in choices("reward.mode")} == {
        "both": 0.75, "grc": 0.5, "qir": 0.25}
    with pytest.raises(ValueError):
        cim_reward(grc, qir, beta=1.0, mode="neither")
