"""The house's layering, from the code's own imports (function-level ones included): every import points down
the layers of docs/architecture.md, and no two modules import each other, directly or in a circle.

An import by name is an arrow too: a string that is a cim module's dotted name (what ``importlib.import_module``,
``__import__`` or a table of module names feeding them is given, ``"cim.x.y:attr"`` included), and a module a
command line starts (``[sys.executable, "-m", "cim.x.y"]``, ``"python -m cim.x.y"``, ``pkg://cim.x.y``).
Docstrings are not read."""
from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# top to bottom; a package may import its own modules and any package of a lower layer, nothing else
LAYERS = [
    {"cli", "flows", "plots_page"},         # entry points: parse arguments / orchestrate / the DVC plots page
    {"stages"},                             # one function per stage: determinism, MLflow run, outputs
    {"pipeline", "ablate"},                 # experiments over the parts: the comparison, ablations
    {"train"},                              # verl, TRL and the local CPU backend; the sentinels
    {"audit"},                              # does the reward carry signal? (its hack transforms: the sentinels')
    {"eval", "service"},                    # benchmarks, metrics, captioners; the reward service
    {"reward"},                             # the equations, the item/result schema, the scorer
    {"index"},                              # shards, search, identity
    {"encoders", "data"},                   # text/image encoders; manifests, adapters, the demo world
    {"tracking"},                           # MLflow conventions
    {"config"},                             # the schema of params.yaml
    {"presets", "protocols", "plugins"},    # named YAML data; every registry and its built-in modules
    {"relations", "io", "registry", "lazy", "cim", "captions", "quiet"},
    {"determinism", "errors"},
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# strings that spell a module's name without loading it: the entry-point group of third-party plugins
NOT_A_MODULE = {("cim.registry", "cim.plugins")}
# cim.plugins, the table of every registry, names its kinds' built-in modules, which import it to register
# (the one sanctioned inversion: a registry imports them on its first read, so importing the table loads no
# model code). They live in the kinds' own packages, up to the evaluation floor: those names are not arrows. A
# built-in from a higher floor (the local backend's captioner, cim.train) is an entry point of its kind's group
# in pyproject.toml instead (test_built_in_entry_points_name_modules), so no low module names a high one.
REGISTRY_TABLE, REGISTRY_TABLE_REACH = "cim.plugins", LAYER["eval"]
DOTTED = re.compile(r"cim(?:\.\w+)+(?::[\w.]+)?")
STARTED = re.compile(r"(?:(?<![\w-])-m\s+|pkg://)(cim(?:\.\w+)+)")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the cim modules it imports (resolved to the deepest existing module), anywhere in the file."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    def within_table_reach(module: str, target: str) -> bool:
        found = resolve(target)
        return module == REGISTRY_TABLE and bool(found) and LAYER[_package(found)] >= REGISTRY_TABLE_REACH

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                targets = [t for t in _named(node.value) if not within_table_reach(name, t)]
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                found = resolve(target) if target.startswith("cim") else None
                if (found and found != name and (name, found) not in NOT_A_MODULE
                        and not (path.name == "__init__.py" and found.startswith(name + "."))):
                    edges[name].add(found)
    return edges


def _named(text: str) -> list[str]:
    """The cim modules a string names for loading: all of it a dotted name (``"cim.x.y"``, ``"cim.x.y:attr"``),
    or a module a command line in it starts (``-m cim.x.y``, ``pkg://cim.x.y``)."""
    whole = [text.partition(":")[0]] if DOTTED.fullmatch(text) else []
    return whole + STARTED.findall(text)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cim"


def test_every_package_has_a_layer():
    assert {_package(m) for m in _modules()} <= set(LAYER), sorted({_package(m) for m in _modules()} - set(LAYER))


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in _imports(_modules()).items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a != b and LAYER[b] <= LAYER[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(sorted(wrong))


def test_no_stage_imports_another_stage():
    """A stage calls no other stage: a body two stages share lives in a library layer below them, and the
    runners (the commands, the flows: cim.pipeline.plan's steps) chain the stages."""
    wrong = sorted(f"{module} -> {target}" for module, targets in _imports(_modules()).items()
                   if module.startswith("cim.stages.") for target in targets
                   if target == "cim.stages" or target.startswith("cim.stages."))
    assert not wrong, "stages that import another stage:\n" + "\n".join(wrong)


def test_no_module_import_cycle():
    edges = _imports(_modules())
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):                                       # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for module in sorted(_modules()):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_flow_imports_a_command_module():
    """Prefect flows call stages, never the `cim` command modules (cim.cli)."""
    flows = Path(__file__).resolve().parents[2] / "flows"
    for path in [*flows.glob("*.py"), *(SRC / "cim" / "flows").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "cim.cli" or n.startswith("cim.cli.") for n in names), path


def test_imports_by_name_and_started_modules_are_arrows():
    """The by-name forms the layering sees, on strings and on this tree's own tables and command lines."""
    assert _named("cim.train.local.captioner") == ["cim.train.local.captioner"]
    assert _named("cim.cli:main") == ["cim.cli"]
    assert _named("python -m cim.service --port 1") == ["cim.service"]
    assert _named("pkg://cim.train.verl.reward") == ["cim.train.verl.reward"]
    assert _named("cim serve") == _named("a cim.cli mention in a sentence") == _named("cim") == []
    edges = _imports(_modules())
    assert "cim.service" in edges["cim.service.process"]                 # the child process: -m cim.service
    assert "cim.eval.world_truth" in edges["cim.eval.metrics"]           # "cim.eval.world_truth.scene_recall"
    assert "cim.train.verl.reward" in edges["cim.train.verl.launch"]     # verl loads the reward by pkg:// name
    assert "cim.eval.captioners" not in edges["cim.plugins"]             # the registry table, within its reach


def test_built_in_entry_points_name_modules():
    """pyproject.toml's entry points of CIM's own registry groups name modules of src/cim (a built-in that a
    low registry cannot name, e.g. the local backend's captioner), each one registered by a registry."""
    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]
    groups = {g: eps for g, eps in project.get("entry-points", {}).items() if g.startswith("cim.")}
    mods = _modules()
    named = {value.partition(":")[0] for eps in groups.values() for value in eps.values()}
    assert named and named <= set(mods), sorted(named - set(mods))
    table = (SRC / "cim" / "plugins.py").read_text()
    assert all(f'"{group}"' in table for group in groups if group != "cim.plugins"), sorted(groups)
