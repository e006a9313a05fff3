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
:mod:`~cim.audit.settings` (the kinds, ``audit.*`` with a call's options), :mod:`~cim.audit.lexicon` (the
English word lists).

The stage (an MLflow run around it): :mod:`cim.stages.audit`; the command: ``cim audit --help``.
"""
from cim.lazy import lazy_exports

_EXPORTS = {"run_audit": "cim.audit.run", "log_audit": "cim.audit.report", "AuditConfig": "cim.audit.settings",
            "KINDS": "cim.audit.settings", "AXES": "cim.audit.settings"}
__all__ = ["run_audit", "log_audit", "AuditConfig", "KINDS", "AXES"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
