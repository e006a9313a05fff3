"""The audit's report: ``audit.json`` (the numbers), ``audit.md`` (verdicts, warnings, the table, an example
of every pair kind), ``audit.png`` (rates with intervals per component), one verdict line per component,
warnings, and :func:`log_audit` (the numbers and files into the active MLflow run).

Nothing written depends on when or how fast the audit ran: the same inputs give byte-identical files (the
timings are in the returned report's ``runtime`` and in MLflow only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from cim.audit.measure import components as components_of, state
from cim.audit.settings import AXES
from cim.io import atomic_write_json, atomic_write_text

__all__ = ["NAMES", "verdicts", "warnings", "markdown", "plot", "write", "log_audit", "JSON_KEYS"]

NAMES = {"score": "Υ", "grc": "GRC", "qir": "QIR"}
# with guard terms (reward.guards) the score is the composed reward, Υ is audited beside it as `upsilon`
GUARDED_NAMES = {"score": "composed", "upsilon": "Υ (paper)"}
JSON_KEYS = ("components", "n", "settings")
# what each reward.mode needs of its components (the paper's split: GRC detail richness, QIR precision; a
# single-component reward needs that component to carry both)
RELIES = {"both": {"score": ("detail", "precision"), "grc": ("detail",), "qir": ("precision",)},
          "grc": {"score": ("detail", "precision")}, "qir": {"score": ("detail", "precision")}}
_STATE_WORDS = {"chance": "at chance", "reverses": "reversed (it prefers the degraded copy)"}
MIN_PAIRS = 100


def _short(comp: str, guarded: bool = False) -> str:
    """A component's short label: ``Υ``, ``GRC``, ``QIR``; with guards ``composed``, ``Υ (paper)`` and
    ``guard <name>``."""
    if guarded and comp in GUARDED_NAMES:
        return GUARDED_NAMES[comp]
    if comp in NAMES:
        return NAMES[comp]
    from cim.reward.guards import TERM_PREFIX

    return "guard " + comp[len(TERM_PREFIX):] if comp.startswith(TERM_PREFIX) else comp


def _name(comp: str, mode: str, guarded: bool = False) -> str:
    """The label of a verdict or a plot panel: the short one, and what Υ is when reward.mode keeps one term."""
    if mode in ("grc", "qir") and comp == ("upsilon" if guarded else "score"):
        return f"Υ ({'paper, ' if guarded else ''}= {NAMES[mode]}, reward.mode={mode})"
    return _short(comp, guarded)


def _columns(settings: dict) -> tuple[str, ...]:
    """The report's components, in order, for the reward of ``settings`` (guards from ``reward.guards``)."""
    return components_of(list((settings.get("reward") or {}).get("guards") or ()))


def _num(cell: dict) -> str:
    lo, hi = cell["ci95"]
    return f"{cell['rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def _list(words: list[str], joiner: str = "and") -> str:
    return words[0] if len(words) == 1 else f" {joiner} ".join([", ".join(words[:-1]), words[-1]])


def verdict(comp: str, data: dict, mode: str, guarded: bool = False) -> str:
    """``GRC: orders detail, not precision (detail 0.87 [0.85, 0.89], precision 0.50 [0.48, 0.52])``, then the
    hacks whose copy the component scores *above* the original, and those it does not tell from it (a
    policy is not pushed away from them)."""
    axes = [a for a in ("detail", "precision") if a in data]
    states = {a: state(data[a]) for a in axes}
    orders = [a for a in axes if states[a] == "orders"]
    chance = [a for a in axes if states[a] == "chance"]
    reverses = [a for a in axes if states[a] == "reverses"]
    parts = []
    if orders:
        parts.append("orders " + _list(orders))
        if chance:
            parts.append("not " + _list(chance, "nor"))
    elif chance:
        parts.append("orders neither " + _list(chance, "nor") if len(chance) > 1 else
                     f"at chance on {chance[0]}")
    if reverses:
        parts.append("reverses " + _list(reverses))
    line = f"{_name(comp, mode, guarded)}: {', '.join(parts) or 'no pairs'}"
    if axes:
        line += " (" + ", ".join(f"{a} {_num(data[a])}" for a in axes) + ")"
    fooled = [k for k, cell in data.get("hacks", {}).items() if state(cell) == "reverses"]
    if fooled:
        line += f"; scores these hacks above the caption: {', '.join(fooled)}"
    blind = [k for k, cell in data.get("hacks", {}).items() if state(cell) == "chance"]
    if blind:
        line += f"; at chance on the hacks {', '.join(blind)} (writing them costs no {_short(comp, guarded)})"
    return line


def verdicts(components: dict, mode: str) -> dict[str, str]:
    """One line per component, in the report's order (with guards, ``upsilon`` among them)."""
    guarded = "upsilon" in components
    return {comp: verdict(comp, data, mode, guarded) for comp, data in components.items()}


def warnings(components: dict, settings: dict) -> list[str]:
    """What a user should know before training with this reward on this corpus."""
    mode = settings["reward"]["mode"]
    guarded = bool(settings["reward"].get("guards"))
    out = []
    for comp, axes in RELIES.get(mode, {}).items():
        for axis in axes:
            cell = components.get(comp, {}).get(axis)
            if cell is None:
                continue
            st = state(cell)
            if st in _STATE_WORDS:
                role = "" if comp == "score" else f" (the paper gives {NAMES[comp]} the {axis} role)"
                out.append(f"reward.mode={mode} relies on {_short(comp, guarded)} for {axis}{role}, but it is "
                           f"{_STATE_WORDS[st]} on {axis} here: rate {_num(cell)}")
    score = components.get("score", {})
    for axis, harm in (("detail", "leaving that content out"), ("precision", "writing that false content")):
        for kind, cell in (score.get(axis) or {}).get("kinds", {}).items():
            if state(cell) == "reverses":
                out.append(f"the reward is reversed on {axis}: {kind} (rate {_num(cell)}, mean margin "
                           f"{cell['margin']:+.3f}): it scores the copy above the caption, so a policy trained "
                           f"on it gains reward by {harm}")
    blind = []
    for kind, cell in score.get("hacks", {}).items():
        if state(cell) == "reverses":
            out.append(f"the reward scores the '{kind}' hack above the original caption (rate {_num(cell)}, "
                       f"mean margin {cell['margin']:+.3f}): a policy trained on it gains by writing that")
        elif state(cell) == "chance":
            blind.append(f"'{kind}' (rate {_num(cell)})")
    if blind:
        out.append(f"the reward is at chance on the {'hack' if len(blind) == 1 else 'hacks'} {_list(blind)}: it "
                   "does not score such text below the caption, so writing it costs a policy no reward and "
                   "training does nothing to keep a policy from it")
    for axis in ("detail", "precision"):
        cell = components.get("score", {}).get(axis)
        if cell is not None and cell["pairs"] < MIN_PAIRS:
            out.append(f"only {cell['pairs']} {axis} pairs: the interval is wide; audit more captions")
    if not settings["reward"].get("exclude_source", True):
        out.append("reward.exclude_source=false: a caption taken from the corpus retrieves its own row, which "
                   "favours the original over every copy; audit with exclude_source=true or with --captions")
    return out


# -- files ------------------------------------------------------------------------------------------------------
def _rows(components: dict) -> list[tuple[str, str, Optional[str]]]:
    """(label, axis, kind or None) in table order, for the rows some component has."""
    any_comp = next(iter(components.values()), {})
    rows = []
    for axis, kinds in AXES.items():
        if axis == "hacks":
            rows += [(f"hack: {k}", axis, k) for k in kinds if k in any_comp.get("hacks", {})]
            continue
        if axis not in any_comp:
            continue
        rows.append((f"**{axis}**", axis, None))
        rows += [(f"  {axis}: {k}", axis, k) for k in kinds if k in any_comp[axis]["kinds"]]
    return rows


def _cell(components: dict, comp: str, axis: str, kind: Optional[str]) -> Optional[dict]:
    data = components.get(comp, {})
    if axis == "hacks":
        return data.get("hacks", {}).get(kind)
    if axis not in data:
        return None
    return data[axis] if kind is None else data[axis]["kinds"].get(kind)


def _guard_lines(reward: dict) -> list[str]:
    """With guard terms, what the composed reward, Υ (paper) and the guard columns are (else nothing)."""
    guards = reward.get("guards") or {}
    if not guards:
        return []
    terms = " + ".join(f"{g['weight']:g}·{name}" for name, g in guards.items())
    gdpo = reward.get("aggregate", "sum") != "sum"
    return [f"**composed** is the reward trained on, with the guard terms of reward.guards: composed = Υ + {terms} "
            f"(reward.aggregate={reward.get('aggregate', 'sum')}"
            + ("; training normalises each term within its group, the audit scores their weighted sum" if gdpo
               else "") + "). **guard NAME** is one guard's value, "
            "unweighted, in [-1, 0] (0: nothing wrong): its rate is how often the original's value is above its "
            "copy's. A guard is there for the hacks; where it also orders detail or precision, the composed "
            "reward's rates there differ from Υ's (docs/audit.md, docs/reward.md).", ""]


def markdown(report: dict) -> str:
    comps, settings = report["components"], report["settings"]
    r, enc = settings["reward"], settings["encoders"]
    lines = [
        "# CIM reward audit: does the reward tell a caption from its degraded copy?", "",
        f"{report['n']} captions ({settings['source']}; {settings['pairs']} pairs) scored against a corpus of "
        f"{settings['corpus_rows']} rows with reward.mode={r['mode']}, K={r['top_k']}, β={r['beta']}, "
        f"exclude_source={r['exclude_source']}; text encoder {enc['text']}, image encoder {enc['image']}"
        f"{' (centred)' if enc.get('center_images') else ''}.", "",
        ("**Υ (paper)** is the paper's reward" if r.get("guards") else "**Υ** is the reward")
        + ", Υ = GRC + β·QIR over the K corpus images the caption retrieves: **GRC** (Gallery "
        "Representation Consistency) is how alike those K images are; **QIR** (Query-gallery Image Relevance) "
        "how alike they are to the caption's own image, rank-weighted (docs/reward.md).", "",
        *_guard_lines(r),
        "**rate**: how often the original scores above its copy (a tie counts half; 0.5 is chance), with a 95% "
        "interval from a bootstrap over captions; **margin**: the mean score difference original − copy; "
        "**ties**: the share of pairs scored equal. Detail pairs remove content (nothing false is added), "
        "precision pairs make content false at equal length, hacks are what a policy might write instead "
        "(docs/audit.md).", "", "## Verdicts", ""]
    lines += [f"- {v}" for v in report["verdicts"].values()]
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in report["warnings"]] or ["- none"]
    columns, guarded = _columns(settings), bool(r.get("guards"))
    head = "| pairs | n |" + "".join(f" {n} rate [95% CI] | {n} margin | {n} ties |"
                                      for n in (_short(c, guarded) for c in columns))
    lines += ["", "## Rates", "", head, "|---|---|" + "---|---|---|" * len(columns)]
    for label, axis, kind in _rows(comps):
        cells = [_cell(comps, c, axis, kind) for c in columns]
        n = next((c["pairs"] for c in cells if c), 0)
        row = f"| {label} | {n} |"
        for c in cells:
            row += " | | |" if c is None else f" {_num(c)} | {c['margin']:+.4f} | {c['ties']:.2f} |"
        lines.append(row)
    if report.get("examples"):
        lines += ["", "## An example of each pair kind", ""]
        for kind, ex in report["examples"].items():
            lines += [f"- **{kind}** ({ex['id']}): {ex['original']!r}", f"  → {ex['text']!r}"]
    s = {k: v for k, v in settings.items() if k not in ("reward", "encoders")}
    lines += ["", "## Settings", "", "```", *(f"{k}: {v}" for k, v in s.items()), "```"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps, settings = report["components"], report["settings"]
    columns, guarded = _columns(settings), bool(settings["reward"].get("guards"))
    rows = _rows(comps)
    colours = {"detail": "#1f77b4", "precision": "#d62728", "hacks": "#7f7f7f"}
    if len(columns) <= 3:           # (the reward without guards: one row of panels)
        fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 0.32 * len(rows) + 1.6),
                                 sharey=True)
        firsts = [axes[0]]
    else:                           # with guards: rows of four panels, labels on each row's first
        ncols = 4
        nrows = -(-len(columns) // ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, nrows * (0.32 * len(rows) + 1.2) + 0.4),
                                 sharey=True, squeeze=False)
        axes, firsts = list(grid.reshape(-1)), list(grid[:, 0])
        for ax in axes[len(columns):]:
            ax.axis("off")
    for ax, comp in zip(axes, columns):
        for y, (label, axis, kind) in enumerate(rows):
            cell = _cell(comps, comp, axis, kind)
            if cell is None or cell["ci95"][0] is None:
                continue
            lo, hi = cell["ci95"]
            ax.barh(y, cell["rate"], color=colours[axis], alpha=1.0 if kind is None or axis == "hacks" else 0.55,
                    height=0.7)
            ax.errorbar(cell["rate"], y, xerr=[[cell["rate"] - lo], [hi - cell["rate"]]], fmt="none",
                        ecolor="black", capsize=2, lw=1)
        ax.axvline(0.5, color="black", ls="--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_title(_name(comp, settings["reward"]["mode"], guarded))
        ax.set_xlabel("original beats copy (ties ½)")
        ax.grid(axis="x", alpha=0.3)
    for ax in firsts:
        ax.set_yticks(range(len(rows)), [label.replace("**", "").strip() for label, _, _ in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"CIM reward audit: {report['n']} captions, 95% bootstrap intervals", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write(report: dict, out_dir: Path) -> dict[str, Path]:
    """``audit.json`` (exactly :data:`JSON_KEYS`), ``audit.md`` and ``audit.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    files = {"json": out_dir / "audit.json", "md": out_dir / "audit.md", "png": out_dir / "audit.png"}
    atomic_write_json(files["json"], {k: report[k] for k in JSON_KEYS}, indent=2)
    atomic_write_text(files["md"], markdown(report))
    plot(report, files["png"])
    return files


# -- MLflow -------------------------------------------------------------------------------------------------------
def metrics(report: dict) -> dict[str, float]:
    """The report's numbers as flat MLflow metrics: ``grc.detail.rate``, ``grc.detail.ci_lo``, ...,
    ``grc.detail.sentences.rate``, ``score.hacks.repeat.rate``, ``n``, ``runtime.*``."""
    out: dict[str, float] = {"n": float(report["n"]), "pairs": float(report["settings"]["pairs"])}

    def put(prefix: str, cell: dict) -> None:
        if cell["rate"] is None:
            return
        out[f"{prefix}.rate"] = cell["rate"]
        if cell["ci95"][0] is not None:
            out[f"{prefix}.ci_lo"], out[f"{prefix}.ci_hi"] = cell["ci95"]
        out[f"{prefix}.margin"] = cell["margin"]
        out[f"{prefix}.ties"] = cell["ties"]

    for comp, data in report["components"].items():
        for axis in ("detail", "precision"):
            if axis in data:
                put(f"{comp}.{axis}", data[axis])
                for kind, cell in data[axis]["kinds"].items():
                    put(f"{comp}.{axis}.{kind}", cell)
        for kind, cell in data.get("hacks", {}).items():
            put(f"{comp}.hacks.{kind}", cell)
    for key, value in (report.get("runtime") or {}).items():
        if isinstance(value, (int, float)):
            out[f"runtime.{key}"] = float(value)
    return out


def log_audit(report: dict, out_dir: str | Path | None = None) -> None:
    """Log a finished report into the *active* MLflow run: its numbers as metrics (:func:`metrics`), the
    audit's own settings as ``audit.*`` params (those the run does not already hold), the verdicts and
    warnings as tags, and ``out_dir``'s files as artifacts under ``audit/``."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_audit needs an active MLflow run (open one with cim.tracking.start_run)")
    mlflow.log_metrics(metrics(report))
    settings = report["settings"]
    params = {f"audit.{k}": (",".join(v) if isinstance(v, list) else v) for k, v in settings.items()
              if k in ("sample", "seed", "bootstrap", "donors", "kinds", "tie_within", "source")}
    have = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data.params
    params = {k: v for k, v in params.items() if k not in have}
    if params:
        mlflow.log_params(params)
    tags = {f"audit.verdict.{c}": v[:5000] for c, v in report.get("verdicts", {}).items()}
    tags["audit.warnings"] = str(len(report.get("warnings", [])))
    mlflow.set_tags(tags)
    if out_dir is not None:
        mlflow.log_artifacts(str(out_dir), artifact_path="audit")
