"""The verl training path as released: per-row prompts, gallery rows in extra_info.index, the whole training
set, the overlong-prompt count (verl's own filter with a real processor), the reward service by default."""
import json
import socket

import pyarrow.parquet as pq

from support.train_world import config, index_dir, params_file, tiny_vl_model, world

LONG = " ".join(f"word{i} and many more words to read" for i in range(60))


def _manifest_with_prompts(tmp_path):
    rows = world()["train_rows"]
    path = tmp_path / "train.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            prompt = LONG if i % 2 else f"Describe picture {i} briefly."
            f.write(json.dumps({"id": r["id"], "image": str(world()["dir"] / r["image"]), "prompt": prompt}) + "\n")
    return path, rows


def test_per_row_prompts_gallery_rows_and_the_whole_training_set(tmp_path):
    from cim.train.verl.data import prepare_train

    manifest, rows = _manifest_with_prompts(tmp_path)
    info = prepare_train(config("train.val_size=0"), manifest=str(manifest), out_dir=str(tmp_path / "out"))
    assert info["val_files"] == info["train_files"] and not (tmp_path / "out" / "val.parquet").exists()
    train = pq.read_table(info["train_files"]).to_pylist()
    assert len(train) == len(rows) == info["train_rows"] and info["row_prompts"] == len(rows)
    assert train[0]["prompt"] == [{"role": "user", "content": "<image>Describe picture 0 briefly."}]
    assert train[1]["prompt"][0]["content"] == "<image>" + LONG
    gallery = [r["id"] for r in world()["rows"]]            # index.manifest of the test params
    assert [r["extra_info"]["index"] for r in train] == [gallery.index(r["id"]) for r in rows]
    assert info["in_gallery"] == len(rows)
    # an id the gallery does not hold gets -1 (and is counted)
    other = config(f"index.manifest={tmp_path / 'absent.jsonl'}")
    info = prepare_train(other, manifest=str(manifest), out_dir=str(tmp_path / "out2"))
    assert info["in_gallery"] == 0
    assert {r["extra_info"]["index"] for r in pq.read_table(info["train_files"]).to_pylist()} == {-1}


def test_overlong_rows_are_counted_with_verls_own_filter_and_a_real_processor(tmp_path):
    from cim.train.verl.data import prepare_train
    from cim.train.verl.prompt_lengths import count_overlong

    manifest, rows = _manifest_with_prompts(tmp_path)
    info = prepare_train(config("train.val_size=0"), manifest=str(manifest), out_dir=str(tmp_path / "out"))
    out = count_overlong(info["train_files"], str(tiny_vl_model()), 200)
    assert out["counted"] and out["processor"] == "Qwen2VLProcessor"
    long_ids = [r["id"] for i, r in enumerate(rows) if i % 2]
    assert out["rows"] == len(rows) and out["dropped"] == len(long_ids) and out["dropped_ids"] == long_ids
    assert count_overlong(info["train_files"], str(tiny_vl_model()), 4096)["dropped"] == 0
    absent = count_overlong(info["train_files"], str(tmp_path / "no-model"), 200)
    assert absent["counted"] is False and "not on this machine" in absent["reason"]


def test_verl_scores_through_the_service_by_default_and_in_process_only_when_asked(capsys, tmp_path):
    from cim.service.process import ensure_for as ensure_reward_service
    from cim.train.verl.plan import verl_plan

    index_dir()                          # the tiny world's real index, built once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(f"train.service.port={port}")
    assert verl_plan(cfg, "snap.yaml")["service_url"] == f"http://127.0.0.1:{port}"
    handle = ensure_reward_service(cfg, str(params_file()), [f"train.service.port={port}"])
    try:       # started here, and ready: /health answered before this returned
        assert handle.process is not None and handle.health["corpus_size"] == len(world()["rows"])
        assert handle.url == f"http://127.0.0.1:{port}"
    finally:
        handle.stop()
    opt_in = config("train.service.in_process=true")
    assert ensure_reward_service(opt_in, str(params_file()), []) is None
    plan = verl_plan(opt_in, "snap.yaml")
    assert plan["service_url"] == "" and "+reward.custom_reward_function.reward_kwargs.service_url=''" in plan["overrides"]


def test_internvl_presets_raise_the_prompt_limit_for_their_image_tiles():
    from cim.train.verl.launch import build_overrides

    for preset, want in (("internvl3_8b", 4096), ("qwen2_5_vl_7b", 1024)):
        ov = build_overrides(config(f"train.verl.preset={preset}"), train_files="t", val_files="v")
        assert f"data.max_prompt_length={want}" in ov
    ov = build_overrides(config("train.verl.preset=internvl3_8b", "train.verl.max_prompt_length=8192"),
                         train_files="t", val_files="v")
    assert "data.max_prompt_length=8192" in ov          # the config can raise it further, never lower it
