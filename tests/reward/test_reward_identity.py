"""``reward.exclude_source`` keys corpus rows by image content: every caption of the source image is left out.

A tiny real index (the tiny world's corpus, MiniLM + EfficientNet-Lite0) whose corpus captions some training
images twice (``<id>_2``, as the dataset adapters name repeats) and holds one training image a second time
under another path (a byte copy). Before: only the row whose id equals the image id was dropped, so a
caption that recalls the *second* caption retrieved the source image at rank 1 (cos = 1).
"""
import json
import shutil

import numpy as np
import pytest

from cim.index.identity import IDENTITY_FILES, compute_identity, file_digest

N_DUP = 3


@pytest.fixture(scope="module")
def dup_world(tiny_world, tmp_path_factory):
    """Manifest with ``<id>_2`` rows (same image, the image's reference caption as text) for the first training
    images, and a byte copy of one more training image under ``copies/``."""
    root = tmp_path_factory.mktemp("dup")
    corpus = [json.loads(line) for line in open(tiny_world / "corpus.jsonl")]
    train = [json.loads(line) for line in open(tiny_world / "train.jsonl")]
    by_id = {r["id"]: r for r in corpus}
    rows = [dict(r, image=str(tiny_world / r["image"])) for r in corpus]
    dups = []
    for t in train[:N_DUP]:
        src = by_id[t["id"]]
        rows.append({"id": f"{t['id']}_2", "image": str(tiny_world / src["image"]), "text": t["reference"]})
        dups.append({"image_id": t["id"], "caption": t["reference"], "rows": {t["id"], f"{t['id']}_2"}})
    copied = train[N_DUP]
    (root / "copies").mkdir()
    copy = root / "copies" / "same-bytes.png"
    shutil.copyfile(tiny_world / by_id[copied["id"]]["image"], copy)
    rows.append({"id": "copy-of-" + copied["id"], "image": str(copy), "text": copied["reference"]})
    dups.append({"image_id": copied["id"], "caption": copied["reference"],
                 "rows": {copied["id"], "copy-of-" + copied["id"]}})
    manifest = root / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "manifest": manifest, "dups": dups, "sources": tiny_world / "sources.jsonl",
            "image_of": {r["id"]: r["image"] for r in rows}}


@pytest.fixture(scope="module")
def dup_index(tiny_cfg, tiny_encoders, dup_world):
    from cim.index import build_index

    return build_index(tiny_cfg, dup_world["manifest"], dup_world["root"] / "index", dup_world["sources"],
                       progress=False, encoders=tiny_encoders)


def _score_cli(index_dir, items, tmp_path, params, *overrides):
    from cim.cli import main

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(it) + "\n" for it in items))
    rc = main(["score", "--params", str(params), "--captions", str(src), "--out", str(out),
               "encoders.image.image_size=64", f"index.out_dir={index_dir}", *overrides])
    assert rc == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cim_score_leaves_out_every_caption_of_the_source_image(dup_index, dup_world, tmp_path, defaults_params):
    items = [{"caption": d["caption"], "image_id": d["image_id"]} for d in dup_world["dups"]]
    excluded = _score_cli(dup_index, items, tmp_path, defaults_params)
    included = _score_cli(dup_index, items, tmp_path, defaults_params, "reward.exclude_source=false")
    for d, ex, inc in zip(dup_world["dups"], excluded, included):
        assert ex["error"] is None
        assert not set(ex["retrieved"]) & d["rows"], (d["image_id"], ex["retrieved"])   # no row of the image
        assert ex["source_rank"] == 1                     # the monitor still says it would have come first
        assert inc["retrieved"][0] in d["rows"] and inc["source_rank"] == 1
        assert inc["qir"] > ex["qir"]                     # cos = 1 at rank 1 is what exclusion takes away


def test_an_image_path_item_excludes_the_rows_of_those_bytes(dup_index, dup_world, tiny_cfg, tiny_encoders):
    """Before: an item given by image path had no own row at all, so nothing was excluded."""
    from cim.index import CorpusIndex
    from cim.reward.scorer import Scorer

    text, image = tiny_encoders
    scorer = Scorer(CorpusIndex.load(dup_index, device="cpu"), text, image)
    d = dup_world["dups"][-1]                                  # the copied image: two paths, one picture
    res = scorer.score([{"caption": d["caption"], "image": dup_world["image_of"][d["image_id"]]}])[0]
    assert res["error"] is None and not set(res["retrieved"]) & d["rows"] and res["source_rank"] == 1


def test_the_index_records_image_identity(dup_index, dup_world, tmp_path):
    from cim.index import CorpusIndex, IndexCorrupt

    meta = json.loads((dup_index / "meta.json").read_text())
    ident = meta["identity"]
    assert ident["max_rows_per_image"] == 2 and ident["rows_sharing_an_image"] == 2 * (N_DUP + 1)
    assert ident["images"] == ident["rows"] - (N_DUP + 1)
    assert set(IDENTITY_FILES) <= set(meta["checksums"]["files"])        # verified on load like the rest
    index = CorpusIndex.load(dup_index, device="cpu")
    groups = index.identity.groups
    for d in dup_world["dups"]:
        a, b = (index.row_of[r] for r in sorted(d["rows"]))
        assert groups[a] == groups[b]
        j = index.sources_ids.index(d["image_id"])
        assert index.identity.source_groups[j] == groups[a]
    tampered = tmp_path / "tampered"
    shutil.copytree(dup_index, tampered)
    np.save(tampered / "image_groups.npy", np.zeros_like(np.load(dup_index / "image_groups.npy")))
    with pytest.raises(IndexCorrupt, match="image_groups.npy"):
        CorpusIndex.load(tampered, device="cpu")


def test_an_index_without_identity_is_refused_with_what_to_do(tiny_index_dir, tmp_path):
    """Index format 2 always records the image identity: a folder without it (or of format 1) is rebuilt,
    not silently scored with other captions of a source left in its retrieval."""
    from cim.index import CorpusIndex, IndexCorrupt

    old = tmp_path / "old-index"
    shutil.copytree(tiny_index_dir, old)
    meta = json.loads((old / "meta.json").read_text())
    meta.pop("identity")
    for name in IDENTITY_FILES:
        meta["checksums"]["files"].pop(name)
        (old / name).unlink()
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="no image identity .* rebuild the index"):
        CorpusIndex.load(old, device="cpu")
    meta["format"] = 1
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="format 1, this code reads format 2; rebuild the index"):
        CorpusIndex.load(old, device="cpu")


def test_an_in_memory_index_keys_every_row_as_its_own_image():
    import numpy as np

    from cim.index import CorpusIndex

    index = CorpusIndex.from_arrays(["a", "b", "c"], np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float16))
    assert index.identity.groups.tolist() == [0, 1, 2] and index.identity.max_rows_per_image == 1


def test_identity_hashes_bytes_not_paths(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"same picture")
    b.write_bytes(b"same picture")
    c.write_bytes(b"another picture")
    ident = compute_identity([str(a), str(c), str(b), str(a)], [str(b), str(tmp_path / "a.png")])
    assert ident.groups.tolist() == [0, 1, 0, 0] and ident.source_groups.tolist() == [0, 0]
    assert bytes(ident.digests[0]) == file_digest(a) and ident.max_rows_per_image == 3
    assert ident.group_of_digest(file_digest(c)) == 1 and ident.group_of_digest(b"x" * 32) == -1
