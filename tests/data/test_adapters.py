"""Dataset adapters on tiny fixtures in each release format (tests/fixtures/adapters/)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cim.cli import main as cli_main
from cim.data.adapters import MissingImagesError, convert
from cim.data.manifest import read_manifest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapters"


def _images(folder: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (40 * k, 100, 200)).save(path)


def test_refinedcaps_all_record_shapes(tmp_path):
    images = tmp_path / "train2017"
    _images(images, ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg"])   # 34 is missing
    out = tmp_path / "out" / "refinedcaps.jsonl"
    report = convert("refinedcaps", FIXTURES / "refinedcaps.json", images, out)
    rows = read_manifest(out)
    assert [r["id"] for r in rows] == ["rc-9", "000000000025", "000000000030"]
    assert [r["text"] for r in rows] == [
        "A bowl of broccoli and rice on a white table.",
        "A giraffe stands beside a tall tree.",              # whitespace normalised
        "A vase of white flowers on a wooden shelf.",       # last gpt turn, found by file name
    ]
    assert [Path(r["image"]).name for r in rows] == ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg"]
    assert all(Path(r["image"]).is_file() and r["source"] == "refinedcaps" for r in rows)
    assert report.records == 4 and report.written == 3
    assert report.missing_images == [str(images / "000000000034.jpg")]
    listed = Path(report.missing_list).read_text().split()
    assert listed == report.missing_images and "1 images missing" in report.summary()


def test_refinedcaps_llamafactory_record_is_read_when_image_exists(tmp_path):
    _images(tmp_path / "coco" / "train2017", ["000000000034.jpg"])
    ann = tmp_path / "one.json"
    ann.write_text(json.dumps([json.loads((FIXTURES / "refinedcaps.json").read_text())[3]]))
    convert("refinedcaps", ann, tmp_path, tmp_path / "m.jsonl")      # found via its relative path
    (row,) = read_manifest(tmp_path / "m.jsonl")
    assert row["text"] == "A zebra grazing on dry grass."
    assert row["image"] == str(tmp_path / "coco" / "train2017" / "000000000034.jpg")


def test_on_missing_fail_writes_nothing(tmp_path):
    _images(tmp_path, ["000000000009.jpg"])
    out = tmp_path / "m.jsonl"
    with pytest.raises(MissingImagesError, match=r"3 of 4 images .* not under"):
        convert("refinedcaps", FIXTURES / "refinedcaps.json", tmp_path, out, on_missing="fail")
    assert not out.exists()


@pytest.mark.parametrize("name", ["densefusion.csv", "densefusion.jsonl"])
def test_densefusion_csv_and_jsonl(tmp_path, name):
    _images(tmp_path, ["part0/df_001.jpg", "part0/df_002.jpg", "part1/df_003.jpg", "df_002.jpg"])
    out = tmp_path / "df.jsonl"
    report = convert("densefusion", FIXTURES / name, tmp_path, out)
    rows = read_manifest(out)
    assert report.missing_images == []
    assert not out.with_name("df.jsonl.missing.txt").exists()
    if name.endswith(".csv"):
        assert [r["id"] for r in rows] == ["df_001", "df_002", "df_003"]
        assert rows[0]["text"].startswith("A red bicycle leaning against a brick wall, with a basket")
        assert rows[2]["image"] == str(tmp_path / "part1" / "df_003.jpg")
    else:
        assert [(r["id"], r["text"]) for r in rows] == [
            ("df_001", "A red bicycle leaning against a brick wall."), ("df_002", "A bowl of ramen.")]
        assert rows[1]["image"] == str(tmp_path / "df_002.jpg")      # <image_id>.jpg when no path


def test_docci_images_subfolder_and_split(tmp_path):
    _images(tmp_path / "images", ["train_00001.jpg", "test_00002.jpg", "qual_dev_00003.jpg"])
    ann = FIXTURES / "docci_descriptions.jsonlines"
    report = convert("docci", ann, tmp_path, tmp_path / "all.jsonl")          # DOCCI root given
    rows = read_manifest(tmp_path / "all.jsonl")
    assert report.written == 3
    assert [(r["id"], r["split"]) for r in rows] == [("train_00001", "train"), ("test_00002", "test"),
                                                     ("qual_dev_00003", "qual_dev")]
    assert rows[1]["text"] == "A white mug on a wooden desk next to a laptop."
    convert("docci", ann, tmp_path / "images", tmp_path / "test.jsonl", split="test")  # images/ given
    assert [r["id"] for r in read_manifest(tmp_path / "test.jsonl")] == ["test_00002"]


def test_coco_ln_one_row_per_narrative(tmp_path):
    _images(tmp_path, ["000000000139.jpg"])                     # 285 missing
    report = convert("coco-ln", FIXTURES / "coco_ln.jsonl", tmp_path, tmp_path / "ln.jsonl")
    rows = read_manifest(tmp_path / "ln.jsonl")
    assert [r["id"] for r in rows] == ["139_12", "139_41"]
    assert {r["image"] for r in rows} == {str(tmp_path / "000000000139.jpg")}
    assert rows[1]["annotator_id"] == 41 and rows[0]["dataset_id"] == "mscoco_val2017"
    assert report.missing_images == [str(tmp_path / "000000000285.jpg")]


def test_record_without_caption_names_file_and_record(tmp_path):
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps([{"image": "a.jpg", "caption": "ok"}, {"image": "b.jpg", "text": "?"}]))
    with pytest.raises(ValueError, match=r"bad\.json: record 1: no caption"):
        convert("refinedcaps", ann, tmp_path, tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="not a known dataset format; known: coco-ln, densefusion"):
        convert("laion", ann, tmp_path, tmp_path / "m.jsonl")


def test_cim_manifest_command(tmp_path, capsys, defaults_params):
    _images(tmp_path, ["000000000139.jpg"])
    ann = tmp_path / "ln.jsonl"
    shutil.copy(FIXTURES / "coco_ln.jsonl", ann)
    args = ["manifest", "--params", str(defaults_params), "--format", "coco-ln", "--annotations",
            str(ann), "--images", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert "3 records -> 2 rows" in err and "1 images missing" in err
    assert len(read_manifest(tmp_path / "m.jsonl")) == 2
    assert cli_main(args[:-2] + ["--out", str(tmp_path / "f.jsonl"), "--on-missing", "fail"]) == 2
    assert "not under" in capsys.readouterr().err and not (tmp_path / "f.jsonl").exists()
