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

    reg.register("b", lambda: "B")
    assert reg.names() == ["a", "b"] and "a" in reg and reg.get("a")() == "A"
    reg.register("a", a)      # the same object again is not a conflict
    with pytest.raises(DuplicateName, match="'a' is already registered"):
        reg.register("a", lambda: "other")
    with pytest.raises(UnknownName, match=r"toy.name='c' is not a known toy part; known: a, b"):
        reg.get("c")
    reg.unregister("b")
    assert reg.names() == ["a"]


def test_registry_imports_its_providers_on_first_read():
    import sys

    reg = Registry("provider test", providers=("json.tool",))
    sys.modules.pop("json.tool", None)
    assert "json.tool" not in sys.modules
    reg.names()
    assert "json.tool" in sys.modules
