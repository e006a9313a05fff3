"""The training data and gallery as released: SC-Captioner's train_coco6k_sft.json (own fixture in its
shape) -> corpus + training manifests, the gallery (RefinedCaps pairs first, then DenseFusion-1M), and
verl parquet rows whose prompt is the record's first user turn and whose extra_info.index is the gallery row."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from cim.cli import main as cli_main
from cim.config import load_config
from cim.data.adapters import convert
from cim.plugins import DATASET_FORMATS
from cim.data.manifest import read_manifest, read_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "adapters"


def _images(folder: Path, names):
    for k, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (30 * k, 90, 160)).save(folder / name)


def test_sc_captioner_sft_writes_the_corpus_and_the_training_manifest(tmp_path):
    assert "sc-captioner-sft" in DATASET_FORMATS
    coco = tmp_path / "train2017"
    _images(coco, ["000000000101.jpg", "000000000102.jpg", "000000000103.jpg"])    # 104 is missing
    report = convert("sc-captioner-sft", FIXTURES / "sc_captioner_sft.json", coco, tmp_path / "rc.jsonl",
                     train_out=tmp_path / "rc_train.jsonl")
    corpus = read_manifest(tmp_path / "rc.jsonl")
    assert [r["id"] for r in corpus] == ["000000000101", "000000000102", "000000000103"]
    assert corpus[1]["text"] == "Two children fly a red kite on a beach."
    assert all("prompt" not in r for r in corpus)
    train = read_sources(tmp_path / "rc_train.jsonl")              # also a valid sources file
    assert [r["id"] for r in train] == [r["id"] for r in corpus] and {r["split"] for r in train} == {"train"}
    assert [r["prompt"] for r in train] == ["Write a detailed description of this picture.",
                                           "Tell me what the photo shows.",
                                           "Write a detailed description of this picture."]
    assert [Path(r["image"]).name for r in train] == ["000000000101.jpg", "000000000102.jpg", "000000000103.jpg"]
    assert report.train_rows == 3 and len(report.missing_images) == 1 and "training manifest" in report.summary()


def test_gallery_order_and_the_training_rows_known_to_the_reward(tmp_path, capsys, defaults_params):
    from cim.train.verl.data import prepare_train

    coco, laion = tmp_path / "train2017", tmp_path / "laion"
    _images(coco, [f"00000000010{i}.jpg" for i in (1, 2, 3, 4)])
    _images(laion, ["part0/df_001.jpg", "df_002.jpg"])
    assert cli_main(["manifest", "--params", str(defaults_params), "--format", "sc-captioner-sft",
                     "--annotations", str(FIXTURES / "sc_captioner_sft.json"), "--images", str(coco),
                     "--out", str(tmp_path / "g" / "rc.jsonl"), "--train-out", str(tmp_path / "g" / "train.jsonl")]) == 0
    assert cli_main(["manifest", "--params", str(defaults_params), "--format", "densefusion",
                     "--annotations", str(FIXTURES / "densefusion.jsonl"), "--images", str(laion),
                     "--out", str(tmp_path / "df" / "df.jsonl")]) == 0
    gallery = tmp_path / "gallery.jsonl"
    assert cli_main(["manifest", "--params", str(defaults_params), "--concat", str(tmp_path / "g" / "rc.jsonl"),
                     str(tmp_path / "df" / "df.jsonl"), "--out", str(gallery)]) == 0
    rows = read_manifest(gallery)
    assert [r["id"] for r in rows] == ["000000000101", "000000000102", "000000000103", "000000000104",
                                       "df_001", "df_002"]                  # RefinedCaps first, then DenseFusion
    assert all(Path(r["image"]).is_file() for r in rows)                    # paths resolved across folders
    cfg = load_config(None, [f"index.manifest={gallery}", "train.val_size=0"])
    info = prepare_train(cfg, manifest=str(tmp_path / "g" / "train.jsonl"), out_dir=str(tmp_path / "parquet"))
    parquet = pq.read_table(info["train_files"]).to_pylist()
    assert [r["extra_info"]["index"] for r in parquet] == [0, 1, 2, 3]
    assert [r["extra_info"]["image_id"] for r in parquet] == [r["id"] for r in rows[:4]]
    assert parquet[1]["prompt"] == [{"role": "user", "content": "<image>Tell me what the photo shows."}]
    assert info["val_files"] == info["train_files"]


def test_concat_refuses_an_id_in_two_parts(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"id": "x", "image": "x.jpg", "text": "t"}) + "\n")
    b.write_text(json.dumps({"id": "x", "image": "y.jpg", "text": "u"}) + "\n")
    from cim.data.manifest import concat_manifests

    with pytest.raises(ValueError, match=r"b\.jsonl:1: id 'x' is already in the gallery \(.*a\.jsonl:1\)"):
        concat_manifests([a, b], tmp_path / "g.jsonl")
    assert not (tmp_path / "g.jsonl").exists()
