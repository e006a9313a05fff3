"""`cim index --engine ray` on a local Ray cluster (2 CPUs): the same bytes as the local engine, resumable
across engines after a run killed mid-way (docs/index.md)."""
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


def _files(folder: Path) -> dict:
    """Every file's bytes; meta.json parsed, without the manifest/sources paths (relative to the folder)."""
    out = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    meta = json.loads(out.pop("meta.json"))
    for part in ("manifest", "sources"):
        meta[part].pop("path")
    return {**out, "meta.json": meta}


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


class Killed(Exception):
    pass


def test_ray_build_is_the_local_build_and_resumes_across_engines(tiny_cfg, tiny_world, tiny_index_dir, tiny_encoders,
                                                                tmp_path, local_ray, capsys, defaults_params):
    from omegaconf import OmegaConf

    from cim.cli import main
    from cim.index import CorpusIndex, build_index
    from cim.reward.scorer import Scorer

    cfg = OmegaConf.merge(tiny_cfg, {"index": {"engine": "ray"}})
    manifest, sources = tiny_cfg.index.manifest, tiny_cfg.index.sources
    out = tmp_path / "ray"
    n_shards = json.loads((Path(tiny_index_dir) / "meta.json").read_text())["shards"]["count"]
    assert n_shards >= 3
    written = []

    def kill_after_first(i, n):            # the driver dies after the first shard is on disk
        written.append(i)
        raise Killed

    with pytest.raises(Killed):
        build_index(cfg, manifest, out, sources, progress=False, on_shard=kill_after_first)
    assert not (out / "meta.json").exists()
    assert [p.name for p in (out / "shards").glob("*.done")] == [f"shard_{written[0]:05d}.done"]

    stats: dict = {}                       # the local engine resumes the distributed run
    build_index(tiny_cfg, manifest, out, sources, progress=False, encoders=tiny_encoders, stats=stats)
    assert stats == {"shards": n_shards, "reused": 1}
    assert _files(out) == _files(Path(tiny_index_dir))

    (out / "shards" / "shard_00001.done").unlink()   # ... and the distributed engine resumes a local one
    for name in ("text_emb_00002.npy", "shard_00002.done"):
        (out / "shards" / name).unlink()
    code = main(["index", "--engine", "ray", "--manifest", str(manifest), "--out", str(out), "--sources",
                 str(sources), "--params", str(defaults_params), "--no-progress", "--no-mlflow",
                 *_tiny_overrides(tiny_cfg)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["shards"]["reused"] == n_shards - 2
    assert _files(out) == _files(Path(tiny_index_dir))        # every file, markers and meta.json included

    text, image = tiny_encoders
    items = [{"caption": json.loads(line)["caption"], "image_id": json.loads(line)["image_id"]}
             for line in open(Path(tiny_world) / "bench_captions.jsonl")][:8]
    scores = []
    for folder in (tiny_index_dir, out):
        index = CorpusIndex.load(folder, expect={"text": text.describe()}, device="cpu")
        scores.append([(r["score"], r["retrieved"]) for r in Scorer(index, text, image).score(items)])
    assert scores[0] == scores[1] and all(np.isfinite(s) for s, _ in scores[0])


def _tiny_overrides(cfg) -> list[str]:
    from conftest import TINY_OVERRIDES

    return [*TINY_OVERRIDES, f"world.out_dir={cfg.world.out_dir}"]
