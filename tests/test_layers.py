"""The house's layering, from the code's own imports (function-level ones included): every import points down
the layers of docs/architecture.md, and no two modules import each other, directly or in a circle."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# top to bottom; a package may import its own modules and any package of a lower layer, nothing else
LAYERS = [
    {"cli", "flows", "smoke"},              # entry points: parse arguments / orchestrate / check a chain
    {"stages"},                             # one function per stage: determinism, MLflow run, outputs
    {"pipeline", "ablate", "audit"},        # experiments over the parts: the comparison, ablations, audits
    {"train"},                              # verl and the local CPU backend
    {"eval", "service"},                    # benchmarks, metrics, captioners; the reward service
    {"reward"},                             # the equations, the item/result schema, the scorer
    {"index"},                              # shards, search, identity
    {"encoders", "data"},                   # text/image encoders; manifests, adapters, the demo world
    {"tracking"},                           # MLflow conventions
    {"config"},                             # the schema of params.yaml
    {"presets", "protocols", "plugins"},    # named YAML data; every registry and its built-in modules
    {"relations", "io", "registry", "lazy", "cim"},
    {"determinism", "errors"},
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


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

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
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
                if found and found != name and not (path.name == "__init__.py" and found.startswith(name + ".")):
                    edges[name].add(found)
    return edges


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
    flows = Path(__file__).resolve().parents[1] / "flows"
    for path in [*flows.glob("*.py"), *(SRC / "cim" / "flows").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "cim.cli" or n.startswith("cim.cli.") for n in names), path
