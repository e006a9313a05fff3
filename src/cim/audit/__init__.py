"""`cim audit`: does the reward carry signal on *this* corpus? Detail and precision, per component, no labels.

From the corpus texts themselves (or a user's captions), the audit builds controlled pairs without any
annotation -- a caption and a copy of it with content removed (detail axis), with content made false at
equal length (precision axis), or hacked (repetition, keyword stuffing, praise, concatenation, ...) --
scores both sides with the configured reward and reports, for Υ, GRC and QIR, how often the original wins,
with a 95% bootstrap interval over captions, the mean margin and the share of ties (docs/audit.md).

    >>> from cim.audit import run_audit, log_audit
    >>> report = run_audit(cfg, index_dir="data/index", manifest="data/world/corpus.jsonl",
    ...                    out_dir="reports/audit")          # audit.json, audit.md, audit.png, pairs.jsonl
    >>> print("\\n".join(report["verdicts"].values()))
    >>> with cim.tracking.start_run(cfg, "audit"):
    ...     log_audit(report, "reports/audit")

Modules: :mod:`~cim.audit.perturb` (the pairs), :mod:`~cim.audit.measure` (rates, intervals),
:mod:`~cim.audit.report` (files, verdicts, warnings, MLflow), :mod:`~cim.audit.run` (:func:`run_audit`),
:mod:`~cim.audit.settings` (:class:`AuditConfig`, the kinds), :mod:`~cim.audit.lexicon` (the English word lists).

The command this is built for (its --help)::

    cim audit [--index DIR] [--manifest M] [--captions F] [--out DIR] [--sample N] [--seed S]
              [--kinds K,K,...] [--no-pairs] [--no-mlflow] [key=value ...]

    Does the reward tell a caption from a worse copy of it, on this corpus and with these encoders?
    Without labels: every audited caption (a corpus text with its own image as the source, or a row of
    --captions) is paired with copies that lose detail (later sentences or clauses dropped, modifiers
    deleted), that turn false at equal length (a colour, object or relation word swapped for one from
    other corpus captions; two colours exchanged), and hacked copies (repeated, keyword-stuffed, word
    salad, shuffled, praised, concatenated with another caption, a hallucinated object added). Both
    sides are scored with the configured reward (reward.*; the source image left out of retrieval as in
    training), and for Υ, GRC and QIR the report gives how often the original wins (ties count half),
    a 95% bootstrap interval over captions, the mean margin and the share of ties; one verdict line per
    component; warnings when a component the chosen reward.mode relies on is at chance on an axis, or
    when the reward prefers a hack.

      --index DIR       the corpus index (default: index.out_dir)
      --manifest M      the corpus manifest the index was built from (default: index.manifest): the texts
                        audited and the donors of every swap
      --captions F      audit these captions instead: jsonl with caption and image_id (an index source or
                        corpus id) or image (a path), optional id
      --out DIR         report folder (default: audit.out_dir, reports/audit): audit.json, audit.md,
                        audit.png, pairs.jsonl
      --sample N        audit N captions, a seeded sample (default 3000; 0: all). About 11 copies
                        each; 3,000 captions took 6.5-7 min on 2 shared CPU cores with MiniLM (4.6 min
                        with encoders.text.backend=onnx); the cost grows with N, not with the corpus
      --seed S          the sample's, the perturbations' and the bootstrap's seed (default: audit.seed)
      --kinds K,...     pair kinds (default: all): sentences,clauses,modifiers (detail), colour,object,
                        relation,swap (precision), repeat,stuff,keywords,shuffle,praise,concat,hallucinate
      --no-pairs        do not write pairs.jsonl (every pair's text and score differences)
      --no-mlflow       do not log to MLflow
"""
from cim.lazy import lazy_exports

_EXPORTS = {"run_audit": "cim.audit.run", "log_audit": "cim.audit.report", "AuditConfig": "cim.audit.settings",
            "KINDS": "cim.audit.settings", "AXES": "cim.audit.settings"}
__all__ = ["run_audit", "log_audit", "AuditConfig", "KINDS", "AXES"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
