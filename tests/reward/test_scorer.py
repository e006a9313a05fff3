"""The scorer against a real tiny index: values equal the equations, batching, bad input per item."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cim.reward import cim_reward, grc, qir
from cim.reward.scorer import RESULT_KEYS, Scorer


def _bench_items(world, n=6):
    rows = [json.loads(line) for line in open(world / "bench_captions.jsonl")]
    return [{"caption": r["caption"], "image_id": r["image_id"]} for r in rows[:n]]


def test_scores_equal_equations_by_hand(tiny_scorer, tiny_world):
    items = _bench_items(tiny_world)
    results = tiny_scorer.score(items)
    index, text = tiny_scorer.index, tiny_scorer.text_encoder
    for item, res in zip(items, results):
        assert res["error"] is None and set(res) == set(RESULT_KEYS)
        q = text.encode([item["caption"]])[0]
        sims = index.text_vectors() @ q                     # brute force over every corpus text
        top = np.argsort(-sims, kind="stable")[:5]
        assert [index.ids[r] for r in top] == res["retrieved"]
        imgs = torch.from_numpy(index.image_table[top].astype(np.float32))
        src = torch.from_numpy(index.source_embeddings([item["image_id"]])[0][0])
        assert res["grc"] == pytest.approx(grc(imgs).item(), abs=1e-5)
        assert res["qir"] == pytest.approx(qir(src, imgs, decay=tiny_scorer.decay).item(), abs=1e-5)
        assert res["score"] == pytest.approx(res["grc"] + res["qir"], abs=1e-5)


def test_batch_result_equals_single_results(tiny_scorer, tiny_world):
    items = _bench_items(tiny_world, 8)
    batched = tiny_scorer.score(items)
    for item, res in zip(items, batched):
        single = tiny_scorer.score([item])[0]
        assert single["retrieved"] == res["retrieved"]
        assert single["score"] == pytest.approx(res["score"], abs=1e-5)


def test_one_encoder_call_and_one_search_per_batch(tiny_scorer, tiny_world):
    calls = {"encode": 0, "search": 0}
    text, index = tiny_scorer.text_encoder, tiny_scorer.index
    real_encode, real_search = text.encode, index.search

    def encode(texts):
        calls["encode"] += 1
        return real_encode(texts)

    def search(q, k):
        calls["search"] += 1
        return real_search(q, k)

    text.encode, index.search = encode, search
    try:
        tiny_scorer.score(_bench_items(tiny_world, 10))
    finally:
        del text.encode, index.search
    assert calls == {"encode": 1, "search": 1}


def test_exclude_source_drops_own_corpus_row(tiny_cfg, tiny_scorer, tiny_world):
    train = [json.loads(line) for line in open(tiny_world / "train.jsonl")][:4]
    corpus = {r["id"]: r["text"] for r in map(json.loads, open(tiny_world / "corpus.jsonl"))}
    items = [{"caption": corpus[r["id"]], "image_id": r["id"]} for r in train]   # the corpus text itself
    excluded = tiny_scorer.score(items)
    included = Scorer(tiny_scorer.index, tiny_scorer.text_encoder, exclude_source=False).score(items)
    for item, ex, inc in zip(items, excluded, included):
        assert item["image_id"] not in ex["retrieved"]
        assert inc["retrieved"][0] == item["image_id"] and inc["source_rank"] == 1
        assert ex["source_rank"] == 1          # the monitor still says where it was found
        assert inc["qir"] > ex["qir"]          # recalling the corpus text pays when the source is allowed


def test_modes_and_beta(tiny_scorer, tiny_world):
    items = _bench_items(tiny_world, 4)
    base = tiny_scorer.score(items)
    idx, enc = tiny_scorer.index, tiny_scorer.text_encoder
    for mode, beta in (("grc", 1.0), ("qir", 1.0), ("both", 0.25)):
        out = Scorer(idx, enc, mode=mode, beta=beta).score(items)
        for b, o in zip(base, out):
            expected = cim_reward(torch.tensor(b["grc"]), torch.tensor(b["qir"]), beta=beta, mode=mode).item()
            assert o["score"] == pytest.approx(expected, abs=1e-5)


def test_bad_inputs_are_per_item(tiny_scorer, tiny_world):
    good = _bench_items(tiny_world, 1)[0]
    items = [
        {"caption": "", "image_id": good["image_id"]},
        {"caption": "   \n\t", "image_id": good["image_id"]},
        {"caption": b"\xff\xfe caption", "image_id": good["image_id"]},
        {"caption": "a red circle", "image_id": "no-such-image"},
        {"caption": "a red circle", "image": str(tiny_world / "absent.png")},
        {"caption": "a red circle"},
        {"image_id": good["image_id"]},
        {"caption": 42, "image_id": good["image_id"]},
        good,
        {"caption": "a large red striped circle " * 4000, "image_id": good["image_id"]},
    ]
    res = tiny_scorer.score(items)
    assert "empty" in res[0]["error"] and "empty" in res[1]["error"]
    assert "UTF-8" in res[2]["error"]
    assert "unknown image_id" in res[3]["error"]
    assert "cannot read image" in res[4]["error"]
    assert "image_id" in res[5]["error"] and "caption" in res[6]["error"]
    assert "string" in res[7]["error"]
    for r in res[:8]:
        assert r["score"] is None and set(r) == set(RESULT_KEYS)
    assert res[8]["error"] is None and res[8]["score"] == pytest.approx(tiny_scorer.score([good])[0]["score"],
                                                                         abs=1e-5)
    assert res[9]["error"] is None and res[9]["truncated"] is True and np.isfinite(res[9]["score"])


def test_image_path_input_matches_image_id(tiny_scorer, tiny_world):
    bench = [json.loads(line) for line in open(tiny_world / "bench.jsonl")][:2]
    by_id = tiny_scorer.score([{"caption": b["reference"], "image_id": b["id"]} for b in bench])
    by_path = tiny_scorer.score([{"caption": b["reference"], "image": str(tiny_world / b["image"])} for b in bench])
    for a, b in zip(by_id, by_path):
        assert b["error"] is None
        assert b["qir"] == pytest.approx(a["qir"], abs=2e-3)   # fp16 source table vs fresh fp32 embedding


def test_cim_score_cli(tiny_cfg, tiny_index_dir, tiny_world, tmp_path, defaults_params):
    items = _bench_items(tiny_world, 3)
    src = tmp_path / "in.jsonl"
    with open(src, "wb") as fh:
        for it in items:
            fh.write((json.dumps(it) + "\n").encode())
        fh.write(b'{"caption": "\xff bad", "image_id": "x"}\n')
        fh.write(b"not json\n")
        fh.write(b'{"caption": "", "image_id": "b00000"}\n')
    out = tmp_path / "out.jsonl"
    overrides = ["encoders.image.image_size=64", f"index.out_dir={tiny_index_dir}"]
    proc = subprocess.run([sys.executable, "-m", "cim.cli", "score", "--params", str(defaults_params),
                           "--captions", str(src), "--out", str(out), *overrides],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 6
    assert all(r["error"] is None for r in rows[:3])
    assert "UTF-8" in rows[3]["error"] and "not JSON" in rows[4]["error"] and "empty" in rows[5]["error"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_near_ties_resolve_by_row_not_by_float_noise(tiny_encoders):
    """Similarities equal to 4 decimals rank by corpus row, so 1e-7 encoder noise cannot reorder them."""
    from cim.index import CorpusIndex

    text, _ = tiny_encoders
    q = text.encode(["a red circle"])[0].astype(np.float64)
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(q.shape)]                      # row 0: the image id's own row (excluded)
    for i in range(1, 9):                                      # rows 1..8: the query itself, scores rising
        v = q * (1 - 1e-7 * (9 - i))                           # with the row by ~1e-7 (raw order: 8, 7, ..)
        rows.append(v)
    text_emb = np.stack(rows).astype(np.float32)
    image = rng.standard_normal((9, 16)).astype(np.float16)
    index = CorpusIndex.from_arrays([f"c{i}" for i in range(9)], text_emb, image)
    res = Scorer(index, text).score([{"caption": "a red circle", "image_id": "c0"}])[0]
    assert res["retrieved"] == ["c1", "c2", "c3", "c4", "c5"]


def test_one_result_schema(tiny_scorer, tiny_world):
    from cim.reward import RESULT_KEYS as exported, empty_result
    from cim.reward.schema import NUMERIC_KEYS, RewardResult

    assert RESULT_KEYS == exported == tuple(RewardResult.__annotations__)
    assert set(NUMERIC_KEYS) == {"score", "upsilon", "grc", "qir", "source_rank", "truncated"}
    assert empty_result("why") == {"score": None, "upsilon": None, "grc": None, "qir": None, "guards": {},
                                   "retrieved": [], "source_rank": None, "truncated": False, "error": "why",
                                   "error_kind": "item"}
    good, bad = tiny_scorer.score([_bench_items(tiny_world, 1)[0], {"caption": ""}])
    assert list(good) == list(RESULT_KEYS) and list(bad) == list(RESULT_KEYS)


def test_error_kind_tells_a_bad_caption_from_a_bad_item(tiny_scorer, tiny_world):
    """verl's reward gives a floor to a caption that is no text, but must not blame the caption for the rest."""
    good = _bench_items(tiny_world, 1)[0]
    res = tiny_scorer.score([{"caption": "", "image_id": good["image_id"]},
                             {"caption": b"\xff bad", "image_id": good["image_id"]},
                             {"caption": 42, "image_id": good["image_id"]},
                             {"caption": "a red circle", "image_id": "no-such-image"},
                             {"caption": "a red circle", "image": str(tiny_world / "absent.png")},
                             {"caption": "a red circle"}, good])
    assert [r["error_kind"] for r in res] == ["caption", "caption", "caption", "item", "item", "item", None]


def _line_index(text, n_rows=12):
    """An in-memory index whose row i is the query "a red circle" scaled so that it ranks (i+1)-th."""
    from cim.index import CorpusIndex

    q = text.encode(["a red circle"])[0].astype(np.float64)
    vecs = np.stack([q * (1 - 0.01 * i) for i in range(n_rows)]).astype(np.float32)
    image = np.random.default_rng(0).standard_normal((n_rows, 16)).astype(np.float16)
    return CorpusIndex.from_arrays([f"c{i}" for i in range(n_rows)], vecs, image)


@pytest.mark.parametrize("exclude", [True, False])
def test_source_rank_counts_only_ranks_that_enter_the_reward(tiny_encoders, exclude):
    """Before: the source's row found at rank 6-10 (searched for the tie margin) set source_rank and with it
    verl's source_retrieved monitor, though only ranks 1..K enter the reward."""
    text, _ = tiny_encoders
    index = _line_index(text)
    scorer = Scorer(index, text, top_k=5, exclude_source=exclude)
    for rank in range(1, 11):
        res = scorer.score([{"caption": "a red circle", "image_id": f"c{rank - 1}"}])[0]
        assert res["source_rank"] == (rank if rank <= 5 else None), rank
        assert (f"c{rank - 1}" in res["retrieved"]) == (not exclude and rank <= 5)


def test_similarities_further_apart_than_the_tolerance_rank_by_similarity(tiny_encoders):
    """Before: similarities were rounded to 1e-4 and then ranked by row, so a corpus text 2e-5 closer to the
    caption lost its rank (and its lambda(r)) to a lower row."""
    from cim.index import CorpusIndex

    text, _ = tiny_encoders
    q = text.encode(["a red circle"])[0].astype(np.float64)
    # rows 0..7: similarity rising with the row by 2e-5 (>> the 1e-6 tolerance, << the old 1e-4 grid)
    vecs = np.stack([q * (1 - 2e-5 * (8 - i)) for i in range(8)] + [-q]).astype(np.float32)
    image = np.random.default_rng(0).standard_normal((9, 16)).astype(np.float16)
    index = CorpusIndex.from_arrays([f"c{i}" for i in range(9)], vecs, image)
    res = Scorer(index, text).score([{"caption": "a red circle", "image_id": "c8"}])[0]
    assert res["retrieved"] == ["c7", "c6", "c5", "c4", "c3"]


def test_a_tie_longer_than_the_search_depth_resolves_to_the_lowest_rows(tiny_encoders):
    """Before: the scorer fetched K + 1 + 4 candidates and ordered only those by row; 20 texts tied within
    encoder noise (1e-7 apart, highest similarity on the highest row) gave rows 15..19, not 0..4, and which
    ones depended on the noise."""
    from cim.index import CorpusIndex

    text, _ = tiny_encoders
    q = text.encode(["a red circle"])[0].astype(np.float64)
    vecs = np.stack([q * (1 - 1e-7 * (20 - i)) for i in range(20)] + [-q, -q]).astype(np.float32)
    image = np.random.default_rng(0).standard_normal((22, 16)).astype(np.float16)
    index = CorpusIndex.from_arrays([f"c{i}" for i in range(22)], vecs, image)
    scorer = Scorer(index, text)
    res = scorer.score([{"caption": "a red circle", "image_id": "c21"}])[0]
    assert res["retrieved"] == ["c0", "c1", "c2", "c3", "c4"]
    assert scorer.searches == 3          # 10 candidates, then 20, then 22: the tie's end was seen


def test_order_with_ties_chains_near_equal_similarities():
    from cim.reward.scorer import order_with_ties

    scores = np.array([[0.9, 0.9 - 4e-7, 0.9 - 8e-7, 0.5, 0.5, -np.inf]], dtype=np.float32)
    rows = np.array([[7, 3, 5, 9, 2, -1]])
    ordered, tie = order_with_ties(scores, rows, 1e-6)
    assert ordered.tolist() == [[3, 5, 7, 2, 9, -1]]         # 0.9 ... 0.9 - 8e-7 chained into one tie
    assert tie.tolist() == [[0, 0, 0, 1, 1, 2]]
    ordered, _ = order_with_ties(scores, rows, 0.0)
    assert ordered.tolist() == [[7, 3, 5, 2, 9, -1]]         # no tolerance: exact ties only


def test_a_caption_that_is_not_utf8_text_fails_alone(tiny_scorer, tiny_world):
    """A lone surrogate is valid JSON but made the tokenizer raise TypeError for the whole batch."""
    good = _bench_items(tiny_world, 6)
    clean = tiny_scorer.score(good)
    mixed = tiny_scorer.score(good[:3] + [{"caption": "\ud800 x", "image_id": good[0]["image_id"]}] + good[3:])
    assert "not valid UTF-8" in mixed[3]["error"] and "surrogate" in mixed[3]["error"] and mixed[3]["score"] is None
    for got, want in zip(mixed[:3] + mixed[4:], clean):
        assert got["retrieved"] == want["retrieved"] and got["score"] == pytest.approx(want["score"], abs=1e-6)


def test_a_corpus_smaller_than_top_k_is_a_config_error(tiny_scorer):
    from cim.errors import ConfigError

    n = len(tiny_scorer.index.ids)
    with pytest.raises(ConfigError, match=f"corpus has {n} rows but reward.top_k={n}"):
        Scorer(tiny_scorer.index, tiny_scorer.text_encoder, top_k=n)          # excluding the source: n + 1
    Scorer(tiny_scorer.index, tiny_scorer.text_encoder, top_k=n, exclude_source=False)


def test_index_meta_records_encoder_dtypes_and_load_checks_them(tiny_index_dir, tiny_encoders):
    from cim.index import CorpusIndex, IndexMismatch

    text, image = tiny_encoders
    meta = json.loads((tiny_index_dir / "meta.json").read_text())
    assert meta["encoders"]["text"]["dtype"] == text.describe()["dtype"] == "float32"      # CPU
    assert meta["encoders"]["image"]["dtype"] == image.describe()["dtype"] == "float32"
    for side, desc in (("text", text.describe()), ("image", image.describe())):
        with pytest.raises(IndexMismatch, match=f"encoders.{side}.dtype='float32'.*'float16'"):
            CorpusIndex.load(tiny_index_dir, expect={side: dict(desc, dtype="float16")}, device="cpu")


@pytest.mark.parametrize("override", [{"pretrained": "none"}, {"image_size": 224}])
def test_image_paths_need_the_image_encoder_the_index_was_built_with(tiny_cfg, tiny_scorer, tiny_world, override):
    """Before: an image path embedded with other settings was scored silently in another embedding space."""
    from omegaconf import OmegaConf

    from cim.encoders import build_image_encoder
    from cim.index import IndexMismatch

    other = build_image_encoder(OmegaConf.merge(tiny_cfg.encoders.image, override))
    scorer = Scorer(tiny_scorer.index, tiny_scorer.text_encoder, lambda: other)
    bench = json.loads(open(tiny_world / "bench.jsonl").readline())
    by_path = {"caption": bench["reference"], "image": str(tiny_world / bench["image"])}
    with pytest.raises(IndexMismatch, match=f"encoders.image.{next(iter(override))}"):
        scorer.score([by_path])
    assert scorer.score([{"caption": bench["reference"], "image_id": bench["id"]}])[0]["error"] is None
    assert tiny_scorer.score([by_path])[0]["error"] is None       # the index's own encoder: scored


def test_cim_score_one_row_per_input_line(tiny_index_dir, tiny_world, tmp_path, capsys, defaults_params):
    """Before: blank lines got no row (16 in, 14 out) and a surrogate caption crashed the run (exit 1)."""
    from cim.cli import main

    items = _bench_items(tiny_world, 14)
    lines = [json.dumps(it) for it in items]
    lines[5] = json.dumps({"caption": "\ud800 x", "image_id": items[5]["image_id"]})   # escaped, valid JSON
    lines[3:3] = [""]
    lines[8:8] = ["   \t"]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    rc = main(["score", "--params", str(defaults_params), "--captions", str(src), "--out", str(out),
               "encoders.image.image_size=64", f"index.out_dir={tiny_index_dir}"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(lines) == 16 and [r["line"] for r in rows] == list(range(1, 17))
    assert rows[3]["error"] == "line 4 is blank" and rows[8]["error"] == "line 9 is blank"
    assert "UTF-8" in rows[6]["error"] and rows[6]["caption"] == "\ud800 x"       # echoed as the input had it
    assert sum(r["error"] is None for r in rows) == 13
    assert all(list(r)[-len(RESULT_KEYS):] == list(RESULT_KEYS) for r in rows)
    counts = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('{"output"'))
    assert json.loads(counts)["errors"] == 3


def test_repeated_captions_are_encoded_once(tiny_scorer, tiny_world):
    """GRPO scores n samples per prompt, often the same caption: each distinct caption is encoded once, and
    the results are the ones the distinct items get."""
    distinct = _bench_items(tiny_world, 6)
    repeated = [distinct[i] for i in (0, 1, 0, 2, 3, 1, 0, 4, 5, 5, 2, 3)]
    repeated.append(dict(distinct[0], image_id=distinct[1]["image_id"]))

    class CountingText:
        def __init__(self, inner):
            self.inner, self.texts = inner, 0

        def encode(self, texts):
            self.texts += len(texts)
            return self.inner.encode(texts)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    text = CountingText(tiny_scorer.text_encoder)
    scorer = Scorer(tiny_scorer.index, text, top_k=tiny_scorer.top_k, decay=tiny_scorer.decay,
                    beta=tiny_scorer.beta, mode=tiny_scorer.mode, exclude_source=tiny_scorer.exclude_source)
    want = {(it["caption"], it["image_id"]): r for it, r in zip(distinct, scorer.score(distinct))}
    assert text.texts == 6
    got = scorer.score(repeated)
    assert text.texts == 6 + 6                       # 13 items, 6 distinct captions
    for item, r in zip(repeated[:-1], got):
        assert r == want[(item["caption"], item["image_id"])]
    other_source = got[-1]                           # same caption, another image: its own QIR
    assert other_source["retrieved"] == want[(distinct[0]["caption"], distinct[0]["image_id"])]["retrieved"]
