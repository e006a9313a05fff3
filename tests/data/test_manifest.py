"""Corpus manifests and sources files: path rules, validation messages, atomic writes."""
from __future__ import annotations

import json
import os

import pytest

from cim.data.manifest import read_manifest, read_sources, write_manifest, write_sources
from cim.io import atomic_write_text


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_round_trip_relative_inside_absolute_outside(tmp_path):
    (tmp_path / "images").mkdir()
    inside = str(tmp_path / "images" / "a.png")
    outside = "/elsewhere/b.png"
    rows = [{"id": "a", "image": inside, "text": "a red circle", "detail": "medium"},
            {"id": "b", "image": outside, "text": "a blue square"},
            {"id": "c", "image": "images/c.png", "text": "a star"}]
    path = tmp_path / "corpus.jsonl"
    assert write_manifest(rows, path) == 3
    raw = _lines(path)
    assert [r["image"] for r in raw] == ["images/a.png", outside, "images/c.png"]
    assert raw[0]["detail"] == "medium"                      # extra keys survive
    back = read_manifest(path)
    assert [r["image"] for r in back] == [inside, outside, str(tmp_path / "images" / "c.png")]
    assert [r["text"] for r in back] == [r["text"] for r in rows]


def test_relative_paths_resolve_against_manifest_folder_not_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "data"
    sub.mkdir()
    (sub / "m.jsonl").write_text(json.dumps({"id": "x", "image": "../img/x.png", "text": "t"}) + "\n")
    monkeypatch.chdir(tmp_path.parent)
    assert read_manifest(sub / "m.jsonl")[0]["image"] == str(tmp_path / "img" / "x.png")


@pytest.mark.parametrize("lines, message", [
    (['{"id": "a", "image": "a.png", "text": "t"}', '{"id": "b", "image": '], r"m\.jsonl:2: malformed JSON"),
    (['{"id": "a", "image": "a.png"}'], r"m\.jsonl:1: missing key\(s\) text"),
    (['{"id": "a", "image": "a.png", "text": "t"}', "", '{"id": "a", "image": "b.png", "text": "u"}'],
     r"m\.jsonl:3: duplicate id 'a' \(first on line 1\)"),
    (['{"id": 7, "image": "a.png", "text": "t"}'], r"m\.jsonl:1: 'id' must be a non-empty string"),
    (['{"id": "a", "image": "a.png", "text": "  "}'], r"m\.jsonl:1: 'text' must be a non-empty string"),
    (['["a", "b"]'], r"m\.jsonl:1: expected a JSON object"),
])
def test_malformed_manifest_names_file_and_line(tmp_path, lines, message):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_manifest(path)


def test_require_text_false_and_sources(tmp_path):
    path = tmp_path / "sources.jsonl"
    write_sources([{"id": "t1", "image": str(tmp_path / "t1.png"), "split": "train"},
                   {"id": "b1", "image": str(tmp_path / "b1.png"), "split": "bench"}], path)
    assert _lines(path)[0] == {"id": "t1", "image": "t1.png", "split": "train"}
    rows = read_sources(path)
    assert [(r["id"], r["split"]) for r in rows] == [("t1", "train"), ("b1", "bench")]
    assert read_manifest(path, require_text=False)[1]["image"] == str(tmp_path / "b1.png")
    with pytest.raises(ValueError, match="missing key"):
        read_manifest(path)                                   # no text: not a corpus manifest
    path.write_text('{"id": "t1", "image": "t1.png"}\n')
    with pytest.raises(ValueError, match=r"sources\.jsonl:1: missing key\(s\) split"):
        read_sources(path)


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_manifest([{"id": "a", "image": "a.png", "text": "old"}], path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        write_manifest([{"id": "x", "image": "x.png", "text": "1"}, {"id": "x", "image": "y.png", "text": "2"}],
                       path)
    with pytest.raises(ValueError, match="missing key"):
        write_manifest([{"id": "y", "image": "y.png"}], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["corpus.jsonl"]


def test_atomic_write_keeps_normal_permissions(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "hello")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "hello"
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
