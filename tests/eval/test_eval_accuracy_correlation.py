"""The verification experiment's pieces on hand-built numbers, and the results table's formatting."""
import math

import pytest

from cim.eval.results import markdown_table, mlflow_metrics
from cim.eval.accuracy_correlation import (LMClassifier, binned_correlation, pet_rule_classifier, smoothed_logit,
                                   verification, world_classifier)


def test_binned_correlation_by_hand():
    # bins of 2 sorted by value: means 1.5, 3.5, 5.5; correct counts 0, 0, 2 of 2
    # -> smoothed logits log(0.2), log(0.2), log(5); Pearson r of x = (-2, 0, 2), y = (-a, -a, a) = sqrt(3)/2
    res = binned_correlation([6, 1, 5, 2, 3, 4], [True, False, True, False, False, False], bin_size=2, metric="grc")
    assert res.bin_means == [1.5, 3.5, 5.5] and res.bin_accuracy == [0.0, 0.0, 1.0]
    assert res.bin_logit == pytest.approx([math.log(0.2), math.log(0.2), math.log(5)])
    assert res.pearson_r == pytest.approx(math.sqrt(3) / 2)
    assert smoothed_logit(1, 2) == 0.0
    partial = binned_correlation(list(range(7)), [False] * 7, bin_size=3)
    assert partial.n_bins == 2 and math.isnan(partial.pearson_r)        # < 3 bins: no correlation


def test_verification_counts_failed_rows():
    rows = [{"grc": i, "qir": -i, "score": 0.0 if i % 2 else 1.0, "coarse_correct": True, "fine_correct": i >= 4}
            for i in range(8)] + [{"grc": None, "qir": None, "score": None, "coarse_correct": True, "fine_correct": True}]
    out = verification(rows, bin_size=2)
    assert (out["n_captions"], out["n_scored"], out["n_failed"]) == (9, 8, 1)
    assert out["fine_accuracy"] == 0.5 and out["grc"]["pearson_r"] > 0.8 and out["qir"]["pearson_r"] < -0.8


def test_world_and_pet_classifiers():
    scene = {"objects": [{"shape": "circle", "colour": "red", "texture": "striped", "size": "large"}]}
    assert world_classifier("A large red striped disc on grass.", scene) == (True, True)
    assert world_classifier("A circle on grass.", scene) == (True, False)
    assert world_classifier("A red square.", scene) == (False, False)
    assert pet_rule_classifier("A fluffy Abyssinian cat on a sofa.", "cat", "abyssinian") == (True, True)
    assert pet_rule_classifier("A dog and a kitten.", "cat", "abyssinian") == (False, False)
    assert pet_rule_classifier("An American Bulldog puppy.", "dog", "american bulldog") == (True, True)
    assert LMClassifier.pick("<think></think>American Bulldog.", ["bulldog", "american bulldog"]) == "american bulldog"
    assert LMClassifier.pick("unknown", ["cat", "dog"]) is None


def test_markdown_table_deltas_and_mlflow_names():
    rows = [{"benchmark": "b", "method": "base", "metrics": {"capture": 0.4412, "relations_qa": 0.2376, "cim": 2.0},
             "labels": {"judge": "offline-triples (offline)"}},
            {"benchmark": "b", "method": "ours", "metrics": {"capture": 0.4893, "relations_qa": 0.4415, "cim": 1.75}}]
    table = markdown_table(rows, baseline="base")
    assert "| ○ base | 44.12 | 23.76 | 2.000 |" in table
    assert "| ● ours | 48.93 (↑4.8) | 44.15 (↑20.4) | 1.750 (↓0.250) |" in table
    assert "- judge: offline-triples (offline)" in table and "Obj P" not in table
    m = mlflow_metrics(rows, "base")
    assert m["b/ours/delta_capture"] == pytest.approx(0.0481) and "b/base/delta_capture" not in m
