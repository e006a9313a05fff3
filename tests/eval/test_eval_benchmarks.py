"""Benchmarks declared as YAML, loaded from their published formats; bad input is counted, not dropped."""
import json
from pathlib import Path

import pytest

from cim.eval.benchmarks import BenchmarkError, load_benchmark, load_spec, spec_from_dict
from cim.eval.benchmarks.demo_world import world_questions
from cim.eval.benchmarks.oxford_pet import pet_breed

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "sc-captioner"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks/sc-captioner not present")


@needs_shared
@pytest.mark.parametrize("name,questions,first", [("cocoln500", 2462, "000000001268"), ("docci500", 2481, "test_00001")])
def test_published_sc_captioner_files(tmp_path, name, questions, first):
    (tmp_path / f"{first}.jpg").write_bytes(b"not really a jpeg")       # one image supplied by the user
    b = load_benchmark(name, root=REPO, data_dir=str(SHARED), images=str(tmp_path))
    assert b.counts["samples"] == 500 and b.counts["questions"] == questions
    assert b.counts["missing_images"] == 499 and first not in b.problems["missing_images"]
    assert b.by_id()[first].image == tmp_path / f"{first}.jpg"
    assert len(b.gpt_objects) == len(b.gpt_attributes) == 500 and b.counts["ids_not_in_references"] == 0
    assert all(len(s.references) == 1 and s.references[0] for s in b.samples)
    assert b.spec.prompt and "capture" in b.spec.metrics


def test_hand_built_sc_captioner_counts_bad_input(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"a": "A cat.", "b": ""}))
    (tmp_path / "objs.jsonl").write_text('{"a": ["cat"]}\n{"zzz": ["dog"]}\n')
    (tmp_path / "attrs.json").write_text(json.dumps({"a": {"cat": ["black"]}}))
    (tmp_path / "q.json").write_text(json.dumps({"a": {"Is there a cat?": "Yes"}, "c": {"?": "No"}}))
    spec = spec_from_dict({"name": "t", "format": "sc-captioner", "data_dir": str(tmp_path),
                           "files": {"references": "gt.json", "gpt_objects": "objs.jsonl",
                                     "gpt_attributes": "attrs.json", "questions": "q.json"},
                           "images": str(tmp_path / "none")})
    b = load_benchmark(spec)
    assert b.counts == {"empty_references": 1, "ids_not_in_references": 2, "questions": 1, "samples": 2,
                        "missing_images": 2}
    assert b.problems["ids_not_in_references"] == ["c", "zzz"] and b.problems["empty_references"] == ["b"]
    with pytest.raises(BenchmarkError, match="questions file"):
        load_benchmark(spec_from_dict({**spec.to_dict(), "files": {**spec.files, "questions": "absent.json"}}))


def test_spec_validation(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark keys.*colour"):
        spec_from_dict({"name": "x", "format": "demo-world", "data_dir": ".", "colour": 1})
    with pytest.raises(BenchmarkError, match="format"):
        spec_from_dict({"name": "x", "format": "coco", "data_dir": "."})
    with pytest.raises(BenchmarkError, match="unknown metrics: cider"):
        spec_from_dict({"name": "x", "format": "demo-world", "data_dir": ".", "metrics": ["cider"]})
    with pytest.raises(BenchmarkError, match="known: .*cocoln500"):
        load_spec("nope", root=REPO)
    for name in ("cocoln500", "docci500", "oxford_pet", "world"):
        assert load_spec(name, root=REPO).name == name


def test_oxford_pet_release_format(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "list.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\nAbyssinian_100 1 1 1\n"
        "american_bulldog_10 2 2 1\nbroken line\n")
    (tmp_path / "images" / "Abyssinian_100.jpg").write_bytes(b"x")
    b = load_benchmark(load_spec("oxford_pet", root=REPO, data_dir=str(tmp_path)))
    assert [(s.id, s.labels["coarse"], s.labels["fine"]) for s in b.samples] == [
        ("Abyssinian_100", "cat", "abyssinian"), ("american_bulldog_10", "dog", "american bulldog")]
    assert b.counts == {"bad_annotation_lines": 1, "samples": 2, "missing_images": 1}
    assert pet_breed("staffordshire_bull_terrier_3") == "staffordshire bull terrier"


def test_world_questions_from_scene_graph():
    scene = {"objects": [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"},
                         {"shape": "star", "colour": "green"}],
             "relations": [{"subject": 0, "relation": "left of", "object": 1},
                           {"subject": 0, "relation": "next to", "object": 2}]}
    assert world_questions(scene) == {
        "Is the red circle to the left of the blue square?": "Yes",
        "Is the red circle to the right of the blue square?": "No",
        "Is the red circle next to the green star?": "Yes"}


def test_demo_world_format(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "b0.png").write_bytes(b"x")
    scene = {"objects": [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}],
             "relations": [{"subject": 0, "relation": "above", "object": 1}]}
    rows = [{"id": "b0", "image": "images/b0.png", "scene_graph": scene, "reference": "A red circle above a blue square.",
             "coarse_label": "circle", "fine_label": "red solid circle"},
            {"id": "b1", "image": "images/b1.png", "scene_graph": scene, "reference": "x", "coarse_label": "circle",
             "fine_label": "red solid circle"}]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    caps = [{"image_id": "b0", "caption": "A circle.", "level": "coarse-correct", "quality": 2},
            {"image_id": "b9", "caption": "?", "level": "wrong", "quality": 0}]
    (tmp_path / "bench_captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in caps))
    b = load_benchmark("world", root=REPO, data_dir=str(tmp_path))
    assert b.counts == {"caption_ids_not_in_bench": 1, "questions": 4, "samples": 2, "missing_images": 1}
    s = b.by_id()["b0"]
    assert s.image == tmp_path / "images" / "b0.png" and s.labels["fine"] == "red solid circle"
    assert b.questions["b0"] == {"Is the red circle above the blue square?": "Yes",
                                 "Is the red circle below the blue square?": "No"}
    with pytest.raises(BenchmarkError, match="cim prepare"):
        load_benchmark("world", root=REPO, data_dir=str(tmp_path / "absent"))
