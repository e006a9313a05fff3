"""What the Prefect flows (``flows/*.py``) share: run folders, caching keyed by inputs, the run's artifact.

- **Run folders.** A flow run writes under ``runs/<flow-run-name>-<id8>/`` (ignored by git and DVC), never
  over the DVC workspace (``data/``, ``checkpoints/``, ``reports/``) unless its ``workspace`` parameter says
  so: :func:`run_overrides` prefixes the config paths of what the flow *produces* with the run folder;
  what it only reads (the workspace's index, say) stays where it is.
- **Caching keyed by inputs.** :func:`inputs_key` is every task's ``cache_key_fn``: the task's name, the
  config sections it reads (path keys left out: a run folder is not an input), the code of the ``cim``
  package, and the *contents* of every argument naming an existing file or folder. Never the run id, so a
  second run with the same inputs reuses the first run's outputs; ``out_*`` arguments (where a task writes)
  are not part of the key. :func:`cached` reruns a task whose cached result names a path that was deleted.
- **Sentinels.** A training task fails with a tripped sentinel's one line and is not retried
  (:func:`retry_unless_sentinel`).
- **Artifact.** :func:`publish`: a markdown artifact with the run's table and its MLflow parent run's link.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from cim.config import load_config, path_keys, to_dict

RUNS_DIR = "runs"
# config paths (:func:`cim.config.path_keys`) by what writes them; a flow rebases the groups it produces (a flow
# that generates the world also reads its manifests from the run folder)
OUTPUT_PATHS = {
    "world": ("world.out_dir", "index.manifest", "index.sources", "train.manifest", "train.local.eval_manifest"),
    "index": ("index.out_dir",),
    "verify": ("verify.out_dir",),
    "audit": ("audit.out_dir",),
    "train": ("train.data_dir", "train.local.out_dir", "train.local.report_dir", "train.verl.checkpoint_dir"),
    "eval": ("eval.out_dir",),
    "pipeline": ("pipeline.checkpoint_dir", "pipeline.report_dir", "pipeline.captions_dir", "pipeline.out_dir"),
}
PATH_KEYS = frozenset(path_keys(or_name=False))    # left out of cache keys: a run folder is not an input
WORLD_BENCHMARK = "world"     # configs/benchmarks/world.yaml reads the generated world (data_dir: data/world)


def config(params: str, overrides: Sequence[str]):
    return load_config(params, list(overrides))


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def run_dir(workspace: bool = False) -> Path:
    """``runs/<flow-run-name>-<id8>`` for the current Prefect flow run (``.`` with ``workspace``)."""
    if workspace:
        return Path(".")
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        raise RuntimeError("run_dir() is called inside a Prefect flow run")
    return Path(RUNS_DIR) / f"{flow_run.name}-{str(run_id)[:8]}"


def run_overrides(cfg, folder: Path, produces: Iterable[str]) -> list[str]:
    """Overrides that put what a flow produces (groups of :data:`OUTPUT_PATHS`) under ``folder``: every
    relative path of the group, prefixed (the world's manifests follow the world, see :func:`relocate`);
    nothing when ``folder`` is the workspace (``.``)."""
    if Path(folder) == Path("."):
        return []
    out = []
    for group in produces:
        root = _get(cfg, OUTPUT_PATHS[group][0])
        if group in ROOTED:
            if not Path(root).is_absolute():
                out += relocate(cfg, group, Path(folder) / root)
            continue
        out += [f"{key}={Path(folder) / _get(cfg, key)}" for key in OUTPUT_PATHS[group]
                if _get(cfg, key) and not Path(_get(cfg, key)).is_absolute()]
    return out


ROOTED = ("world", "index")   # groups whose first key is a folder holding the files the other keys name


def relocate(cfg, group: str, root: str | Path) -> list[str]:
    """Overrides that read group ``group`` (``world`` or ``index``) from ``root``, e.g. a world a cached task
    made in an earlier run's folder: its root key, and the group's paths that lay under the old root."""
    keys = OUTPUT_PATHS[group]
    old = Path(_get(cfg, keys[0]))
    out = [f"{keys[0]}={root}"]
    for key in keys[1:]:
        value = _get(cfg, key)
        if value and Path(value).is_relative_to(old):
            out.append(f"{key}={Path(root) / Path(value).relative_to(old)}")
    if group == "world":
        out.append(f"eval.data_dirs.{WORLD_BENCHMARK}={root}")
    return out


# ------------------------------------------------------------------------------------------------ caching
@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """The ``cim`` package's source: a code change invalidates every cached task."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def content_hash(path: str | Path) -> str:
    """sha256 over a file's bytes, or over a folder's files (relative names and bytes, sorted)."""
    from cim.index.identity import file_digest

    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0" + file_digest(f))
    return h.hexdigest()


def _strip_paths(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in PATH_KEYS:
            continue
        out[key] = _strip_paths(value, name + ".") if isinstance(value, dict) else value
    return out


def _value_key(value: Any) -> Any:
    if isinstance(value, (str, Path)) and str(value) and Path(value).exists():
        return {"contents": content_hash(value)}
    if isinstance(value, dict):
        return {str(k): _value_key(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value_key(v) for v in value]
    return value


def inputs_key(*sections: str) -> Callable[[Any, dict], str]:
    """A ``cache_key_fn`` over the config ``sections`` the task reads (all when none) and its arguments:
    ``params``/``overrides`` give the config, ``out_*`` arguments are where it writes (not inputs), every
    other argument counts by value, or by contents when it names an existing file or folder."""
    def key(context, arguments: dict) -> str:
        cfg = to_dict(config(arguments["params"], arguments.get("overrides") or []))
        cfg = _strip_paths(cfg)
        chosen = {s: _select(cfg, s) for s in sections} if sections else cfg
        args = {k: _value_key(v) for k, v in arguments.items()
                if k not in ("params", "overrides") and not k.startswith("out_")}
        task = getattr(getattr(context, "task", None), "name", "task")
        payload = json.dumps({"task": task, "config": chosen, "args": args, "code": code_hash()},
                             sort_keys=True, default=str)
        return f"{task}-{hashlib.sha256(payload.encode()).hexdigest()}"
    return key


def _select(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part, {}) if isinstance(data, dict) else {}
    return data


def retry_unless_sentinel(task, task_run, state) -> bool:
    """A training task's ``retry_condition_fn``: retry anything but a tripped sentinel
    (:class:`cim.errors.SentinelTripped`, ``train.sentinels.on_trip: stop``), which would resume from the
    checkpoint it stopped at and trip again; the task fails with the trip's line."""
    from cim.errors import SentinelTripped

    try:
        return not isinstance(state.result(raise_on_failure=False), SentinelTripped)
    except Exception:  # noqa: BLE001 - an unreadable result: retry as before
        return True


def cached(task, *args, **kwargs):
    """``task(*args)``; when its (cached) result names files that no longer exist, run it again."""
    result = task(*args, **kwargs)
    if _missing(result):
        result = task.with_options(refresh_cache=True)(*args, **kwargs)
    return result


def _missing(result: Any) -> bool:
    if isinstance(result, Path) or (isinstance(result, str) and os.sep in result):
        return not Path(result).exists()
    if isinstance(result, dict):
        return any(_missing(v) for v in result.values())
    return False


# ----------------------------------------------------------------------------------------------- artifact
def numbers_markdown(numbers: dict) -> str:
    """``{name: number}`` as a two-column markdown table (the flows without a comparison table)."""
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in numbers.items()]
    return "\n".join(lines)


def mlflow_link(cfg, run_id: str | None, ui: str) -> str:
    """Where the MLflow UI (``mlflow ui --backend-store-uri <tracking.uri>``, at ``ui``) shows ``run_id``."""
    from cim.tracking import client

    exp = client(cfg).get_run(run_id).info.experiment_id
    return f"{ui.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def publish(key: str, title: str, body: str, cfg, parent_run_id: str | None, ui: str, folder: Path) -> str:
    """A markdown artifact (Prefect) with ``body`` (the table), the MLflow parent run's link and the run
    folder; returns its id."""
    from prefect.artifacts import create_markdown_artifact

    from cim.tracking import tracking_uri

    link = f"[{parent_run_id}]({mlflow_link(cfg, parent_run_id, ui)})" if parent_run_id else "(none)"
    text = "\n".join([f"# {title}", "", body, "", f"MLflow run: {link} (store `{tracking_uri(cfg)}`)", "",
                      f"Outputs: `{folder}`"])
    return str(create_markdown_artifact(markdown=text, key=key, description=title))
