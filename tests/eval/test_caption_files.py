"""One caption-file format (cim.captions): every key means one thing in every command; a file that does not
fit is one line naming the key it lacks or the images that match nothing (never "0 of N images captioned")."""
import json
from pathlib import Path

import pytest

from cim.captions import match_images, read_captions, read_lines, row_problem
from cim.errors import InputError


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_id_is_a_label_and_image_id_the_image(tmp_path):
    f = _write(tmp_path / "ok.jsonl", [{"id": "good", "image_id": "b00000", "caption": "A cat."},
                                       {"id": "bad", "image_id": "b00001", "caption": "x", "error": "boom"}])
    assert read_captions(f) == ({"b00000": "A cat."}, {"b00001": "boom"})


def test_files_written_by_cim_caption_before_image_id_still_read(tmp_path):
    """reports/captions/*/captions.jsonl of earlier runs: `id` named the image there (with `captioner`)."""
    old = {"id": "b00000", "image": "data/world/images/b00000.png", "caption": "A dog.", "prompt": "p",
           "captioner": "local:checkpoints/sft", "decoding": None, "error": None}
    f = _write(tmp_path / "old.jsonl", [old])
    assert read_captions(f) == ({"b00000": "A dog."}, {})
    assert next(read_lines(f))["image_id"] == "b00000"


def test_a_json_object_maps_image_ids_to_captions(tmp_path):
    f = tmp_path / "caps.json"
    f.write_text(json.dumps({"a": "A dog.", "b": ["A bird."]}))
    assert read_captions(f) == ({"a": "A dog.", "b": "A bird."}, {})


def test_a_row_without_an_image_names_the_key_it_lacks(tmp_path):
    f = _write(tmp_path / "ids.jsonl", [{"id": "b00000", "caption": "A cat."}])
    with pytest.raises(InputError) as err:
        read_captions(f)
    msg = str(err.value)
    assert "ids.jsonl:1" in msg and "no 'image_id'" in msg and "'id' is only the row's label" in msg
    assert row_problem({"image": "a.png"}) == "no 'caption'"
    assert row_problem({"image_id": "a", "caption": ""}) is None


def test_ids_that_match_nothing_are_named(tmp_path):
    images = {"b00000": str(tmp_path / "b00000.png"), "b00001": None}
    with pytest.raises(InputError) as err:
        match_images("mine.jsonl", ["good", "bad"], images, "benchmark world")
    msg = str(err.value)
    assert "none of its 2 images ('good', 'bad')" in msg and "'b00000'" in msg and "image_id" in msg
    assert "0 of" not in msg
    # by path: the resolved path or the file name of a benchmark image
    assert match_images("m", [str(tmp_path / "b00000.png"), "b00001", "zzz"], images, "w") == {
        str(tmp_path / "b00000.png"): "b00000", "b00001": "b00001"}


def test_the_file_captioner_checks_the_benchmark_and_shows_no_bar(tmp_path, capsys):
    from cim.eval.benchmarks import Sample
    from cim.eval.captioners import FileCaptioner

    class Bench:
        name = "world"
        samples = [Sample("b00000", None, ["r"]), Sample("b00001", None, ["r"])]

    wrong = FileCaptioner(_write(tmp_path / "labels.jsonl", [{"image_id": "good", "caption": "x"}]))
    with pytest.raises(InputError, match=r"none of its 1 images \('good'\) is an image of benchmark world"):
        wrong.methods(Bench(), "Describe.", tmp_path / "out")
    right = FileCaptioner(_write(tmp_path / "mine.jsonl", [{"id": "r1", "image_id": "b00001", "caption": "A cat."}]))
    [(method, caps, info)] = right.methods(Bench(), "Describe.", tmp_path / "out")
    assert caps == {"b00001": "A cat."} and info["counts"]["not_in_file"] == 1
    written = [json.loads(x) for x in Path(info["file"]).read_text().splitlines()]
    assert [r["image_id"] for r in written] == ["b00000", "b00001"] and "id" not in written[0]
    assert "captioning" not in capsys.readouterr().err


def test_score_refuses_unreadable_or_keyless_input_before_any_model(tmp_path, monkeypatch, capsys):
    from cim.cli import main
    from cim.reward import scorer

    def no_model(*a, **k):
        raise AssertionError("a model loaded before the input was checked")

    monkeypatch.setattr(scorer.Scorer, "from_config", classmethod(no_model))
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--captions", "missing.jsonl", "--out", "o.jsonl"]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    _write(tmp_path / "ids.jsonl", [{"id": "b00000", "caption": "x"}])
    assert main(["score", "--captions", "ids.jsonl", "--out", "o.jsonl"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ": note: " not in ln]
    assert len(err) == 1 and "no row to score (line 1: no 'image_id'" in err[0]
    assert not (tmp_path / "o.jsonl").exists()


def test_compare_says_the_name_file_form(tmp_path, monkeypatch, capsys):
    from cim.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--captions", "mine", "file.jsonl", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "--captions takes NAME=FILE as one argument" in err and "'mine' 'file.jsonl'" in err
    assert "not of the form key=value" not in err


def test_compare_help_shows_a_percent_sign(capsys):
    from cim.cli import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert "95% intervals" in " ".join(out.split()) and "%%" not in out
