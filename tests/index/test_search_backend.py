"""index.search_backend: torch (exact, deterministic; default) or faiss (FAISS's kernels; faiss-gpu on CUDA)."""
import numpy as np
import pytest

from support.train_world import config, index_dir, world

from cim.config import ConfigError, load_config
from cim.index import CorpusIndex
from cim.index.store import faiss_gpu_available, require_faiss_gpu


def _arrays(n=500, d=32, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n, d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return [f"r{i}" for i in range(n)], text, rng.standard_normal((n, 8)).astype(np.float16)


def test_faiss_backend_finds_the_same_rows_as_the_exact_torch_path_on_cpu():
    ids, text, table = _arrays()
    queries = text[:40] + 0.05 * np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)
    ours = CorpusIndex.from_arrays(ids, text, table)
    theirs = CorpusIndex.from_arrays(ids, text, table, search_backend="faiss")
    assert ours.search_backend == "torch" and theirs.search_backend == "faiss"
    (s1, r1), (s2, r2) = ours.search(queries, 5), theirs.search(queries, 5)
    assert np.array_equal(r1, r2) and np.allclose(s1, s2, atol=1e-5)


def test_asking_for_faiss_on_a_gpu_without_faiss_gpu_is_one_clear_error():
    if faiss_gpu_available():
        pytest.skip("faiss-gpu is installed here")
    with pytest.raises(ConfigError, match=r"needs faiss-gpu .*pip install 'cim\[gpu\]'.*search_backend=torch"):
        require_faiss_gpu("cuda")
    with pytest.raises(ConfigError, match="index.search_backend='gpu' is not one of torch, faiss"):
        load_config(None, ["index.search_backend=gpu"])


def test_the_scorer_takes_the_backend_from_config():
    from cim.reward.scorer import Scorer

    index_dir()
    rows = world()["rows"]
    items = [{"caption": r["text"], "image_id": r["id"]} for r in rows[:6]]
    torch_scores = [x["score"] for x in Scorer.from_config(config()).score(items)]
    faiss_scorer = Scorer.from_config(config("index.search_backend=faiss"))
    assert faiss_scorer.index.search_backend == "faiss"
    assert np.allclose([x["score"] for x in faiss_scorer.score(items)], torch_scores, atol=1e-4)


@pytest.mark.gpu
def test_faiss_gpu_exact_matches_torch_exact_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not faiss_gpu_available():
        pytest.skip("faiss-gpu not installed (pip install 'cim[gpu]')")
    ids, text, table = _arrays(n=20000, d=64)
    queries = text[:256] + 0.05 * np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    ours = CorpusIndex.from_arrays(ids, text, table, device="cuda")
    theirs = CorpusIndex.from_arrays(ids, text, table, device="cuda", search_backend="faiss")
    assert ours.search_device.startswith("cuda") and theirs.search_device.startswith("cuda")
    (s1, r1), (s2, r2) = ours.search(queries, 5), theirs.search(queries, 5)
    assert (r1 == r2).mean() > 0.999 and np.allclose(s1, s2, atol=1e-4)
