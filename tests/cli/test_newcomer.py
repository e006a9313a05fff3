"""A newcomer's first hour (issue 24): a run where nothing succeeded fails, a score says what it means, the
audit warns where training would be misled, and the console carries no third-party chatter."""
import json
import subprocess
import sys

import pytest

from cim.eval.meaning import describe, upper_bound

GOOD = {"rate": 0.9, "ci95": [0.88, 0.92], "pairs": 500, "margin": 0.1, "ties": 0.0}


# -- score: what a number means ------------------------------------------------------------------------------------
def test_the_range_follows_from_the_equations():
    assert upper_bound(5, 0.5, 1.0, "both") == pytest.approx(1 + 1.9375)          # GRC <= 1, QIR <= sum of λ(r)
    assert upper_bound(5, 0.5, 0.5, "both") == pytest.approx(1 + 0.5 * 1.9375)
    assert upper_bound(5, 0.5, 1.0, "qir") == pytest.approx(1.9375) and upper_bound(3, 0.5, 1.0, "grc") == 1.0


def test_reference_points_come_from_verify_of_this_index_only(tiny_cfg, tiny_scorer, tmp_path):
    import copy

    from cim.eval.quality_order import settings

    cfg = copy.deepcopy(tiny_cfg)
    cfg.verify.out_dir = str(tmp_path)
    assert "2.94" in describe(cfg, tiny_scorer) and "run `cim verify`" in describe(cfg, tiny_scorer)
    (tmp_path / "settings.json").write_text(json.dumps(settings(cfg, tiny_scorer)))
    (tmp_path / "metrics.json").write_text(json.dumps({"score": {"mean_by_level": {
        "detailed-correct": 2.3, "coarse-correct": 1.86, "wrong": 1.64}}}))
    line = describe(cfg, tiny_scorer)
    assert "detailed 2.30, vague 1.86, another image's 1.64" in line and "same image on the same index" in line
    cfg.reward.top_k = 3                   # another reward: those numbers are not this score's
    assert "detailed 2.30" not in describe(cfg, tiny_scorer)


def test_score_fails_when_nothing_scored_and_explains_a_success(tiny_index_dir, tiny_world, tmp_path, capsys,
                                                                 defaults_params):
    from cim.cli import main

    bench = [json.loads(x) for x in (tiny_world / "bench_captions.jsonl").read_text().splitlines()]
    args = ["--params", str(defaults_params), "encoders.image.image_size=64", f"index.out_dir={tiny_index_dir}",
            "--out", str(tmp_path / "out.jsonl")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "image_id": "nope", "caption": "Some shapes."}) + "\n")
    assert main(["score", "--captions", str(bad), *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cim score: ")]
    assert len(err) == 1 and "none of its 1 rows scored (line 1: unknown image_id 'nope'" in err[0]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "mine", "image_id": bench[0]["image_id"], "caption": bench[0]["caption"]}) + "\n")
    assert main(["score", "--captions", str(good), *args]) == 0
    err = capsys.readouterr().err
    assert "lies in about 0..2.94" in err and "Loading weights" not in err
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == "mine"


def test_score_with_guards_writes_upsilon_and_each_guard_and_says_score_is_upsilon_plus_guards(
        tiny_index_dir, tiny_world, tmp_path, capsys, defaults_params):
    from cim.cli import main

    bench = [json.loads(x) for x in (tiny_world / "bench_captions.jsonl").read_text().splitlines()]
    image, caption = bench[0]["image_id"], bench[0]["caption"]
    rows = [{"id": "plain", "image_id": image, "caption": caption},
            {"id": "twice", "image_id": image, "caption": f"{caption} {caption}"}]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--params", str(defaults_params), "encoders.image.image_size=64", f"index.out_dir={tiny_index_dir}",
            "--captions", str(captions)]
    assert main(["score", *args, "--out", str(tmp_path / "plain.jsonl")]) == 0
    plain = [json.loads(x) for x in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert all(r["upsilon"] == r["score"] and r["guards"] == {} for r in plain)
    capsys.readouterr()
    assert main(["score", "--protocol", "guarded", *args, "--out", str(tmp_path / "guarded.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "score = Υ + guards = Υ + 1·repetition + 1·length + 1·fluency" in err and "about -3.00..2.94" in err
    got = [json.loads(x) for x in (tmp_path / "guarded.jsonl").read_text().splitlines()]
    for r, p in zip(got, plain):
        assert list(r["guards"]) == ["repetition", "length", "fluency"]
        assert r["upsilon"] == pytest.approx(p["upsilon"], abs=1e-6)       # Υ is the paper's, guards or not
        assert r["score"] == pytest.approx(r["upsilon"] + sum(r["guards"].values()), abs=1e-6)
    assert got[0]["guards"]["repetition"] == 0 > got[1]["guards"]["repetition"]


# -- audit: warnings a newcomer needs ------------------------------------------------------------------------------
def test_the_audit_warns_on_a_reversed_sub_kind_and_a_hack_at_chance():
    from cim.audit.report import markdown, warnings

    reversed_ = {"rate": 0.42, "ci95": [0.38, 0.46], "pairs": 510, "margin": -0.024, "ties": 0.02}
    chance = {"rate": 0.5, "ci95": [0.48, 0.51], "pairs": 3000, "margin": 0.001, "ties": 0.34}
    detail = {**GOOD, "kinds": {"sentences": reversed_, "clauses": GOOD}}
    score = {"detail": detail, "precision": {**GOOD, "kinds": {}}, "hacks": {"stuff": chance, "concat": GOOD}}
    comps = {"score": score, "grc": score, "qir": score}
    out = warnings(comps, {"reward": {"mode": "both", "exclude_source": True}})
    assert len(out) == 2
    assert "reversed on detail: sentences (rate 0.42 [0.38, 0.46]" in out[0] and "leaving that content out" in out[0]
    assert "at chance on the hack 'stuff' (rate 0.50 [0.48, 0.51]): " in out[1] and "costs a policy no reward" in out[1]
    report = {"components": comps, "n": 10, "verdicts": {}, "warnings": out, "settings": {
        "source": "corpus", "pairs": 100, "corpus_rows": 300, "reward": {"mode": "both", "top_k": 5, "beta": 1.0,
        "exclude_source": True}, "encoders": {"text": "t", "image": "i"}}}
    md = markdown(report)
    for words in ("Gallery Representation Consistency", "Query-gallery Image Relevance", "Υ = GRC + β·QIR"):
        assert words in md
    assert "- none" not in md


def test_the_audit_bar_counts_captions_not_texts(capsys):
    from cim.reward.scorer import score_in_batches

    class Echo:
        def score(self, items):
            return [{"score": 1.0} for _ in items]

    items = [{"caption": str(i)} for i in range(12)]          # 3 captions, each with 3 copies
    score_in_batches(Echo(), items, 5, progress=True, desc="audit", shares=[0.25] * 12)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any("3/3" in ln for ln in bar) and not any("/12" in ln for ln in bar)


# -- noise ---------------------------------------------------------------------------------------------------------
def test_third_party_bars_are_off_unless_asked(monkeypatch):
    from cim.quiet import third_party

    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "CIM_VERBOSE", "CIM_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    third_party(loud=True)
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in __import__("os").environ
    third_party()
    assert __import__("os").environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_a_child_process_chatter_is_shown_only_on_failure(capfd, monkeypatch):
    from cim.quiet import captured_stderr

    monkeypatch.delenv("CIM_VERBOSE", raising=False)
    monkeypatch.delenv("CIM_DEBUG", raising=False)
    say = [sys.executable, "-c", "import sys; sys.stderr.write('PTBTokenizer tokenized 12 tokens\\n')"]
    with captured_stderr():
        subprocess.run(say, check=True)
    assert "PTBTokenizer" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), captured_stderr():
        subprocess.run(say, check=True)
        raise RuntimeError("the tokenizer failed")
    assert "PTBTokenizer tokenized" in capfd.readouterr().err


def test_the_sft_curves_have_no_empty_panel(tmp_path):
    from PIL import Image

    from cim.train.local.curves import plot_curves

    ev = [{"step": s, "eval/reward": 1.9, "eval/grc": 0.8, "eval/qir": 1.1, "eval/object_recall": 0.5} for s in (0, 1)]
    two = plot_curves(ev, tmp_path / "sft.png")
    three = plot_curves(ev + [{"step": 1, "train/reward_mean": 1.8, "train/kl": 0.0}], tmp_path / "grpo.png")
    assert Image.open(two).size[0] < Image.open(three).size[0] * 0.75     # two panels, not three
    one = plot_curves([{"step": 0}], tmp_path / "none.png")      # still written (DVC declares it): one panel saying so
    assert one.is_file() and Image.open(one).size[0] < Image.open(two).size[0]


def test_evaluate_prints_no_correlation_from_too_few_bins(capsys, tmp_path):
    from cim.cli.evaluate import print_summary

    nan = {"pearson_r": float("nan"), "n_bins": 1}
    (tmp_path / "table.md").write_text("table\n")
    print_summary({"benchmarks": {"world": {"table": str(tmp_path / "table.md"), "verification": {
        "classifier": "c", "bin_size": 100, "grc": nan, "qir": nan, "score": nan}}}})
    out = capsys.readouterr().out
    assert "nan" not in out and "no correlation from 1 bin(s)" in out


def test_the_seeds_footnote_is_said_of_the_pipeline_runs_only(defaults_params, tmp_path):
    from cim.config import load_config
    from cim.pipeline.variants import captions_path, runs
    from cim.stages.compare import _from_pipeline, as_seed_files

    cfg = load_config(str(defaults_params), [])
    mine = {row: [captions_path(cfg, r) for r in rs] for row, rs in runs(cfg).items()}
    moved = {row: [tmp_path / "runs" / "old" / p for p in paths] for row, paths in mine.items()}   # a flow's cache
    assert _from_pipeline(cfg, as_seed_files(mine)) and _from_pipeline(cfg, as_seed_files(moved))
    assert not _from_pipeline(cfg, as_seed_files({"mine": "a.jsonl", "vague": "b.jsonl"}))
