"""`cim audit`: does the reward tell a caption from a worse copy of it, on this corpus and with these encoders?

Without labels: every audited caption (a corpus text with its own image as the source, or a row of
--captions) is paired with copies that lose detail (later sentences or clauses dropped, modifiers deleted),
that turn false at equal length (a colour, object or relation word swapped for one from other corpus
captions; two colours exchanged), and hacked copies (repeated, keyword-stuffed, word salad, shuffled,
praised, concatenated with another caption, a hallucinated object added). Both sides are scored with the
configured reward (reward.*; the source image left out of retrieval as in training); for Υ, GRC and QIR (with
guard terms, reward.guards or --protocol guarded: also the composed reward and each guard) the report gives how often the original wins (ties count half), a 95% bootstrap interval over captions, the mean
margin and the share of ties, one verdict line per component, and warnings when a component the chosen
reward.mode relies on is at chance on an axis, or when the reward prefers a hack. docs/audit.md.
"""
from __future__ import annotations

import argparse

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "index", help="the corpus index (default: index.out_dir)")
    add_flag(parser, "manifest", help="the corpus manifest the index was built from (default: index.manifest): "
                                           "the texts audited and the donors of every swap")
    add_flag(parser, "captions", help="audit these captions instead: jsonl with caption and image_id (an index "
                                           "source or corpus id) or image (a path), optional id")
    add_out(parser, key="audit.out_dir", help="report folder (default: runs/audit; the pipeline's: audit.out_dir): "
                                              "audit.json, audit.md, audit.png, pairs.jsonl")
    parser.add_argument("--sample", type=int, help="audit N captions, a seeded sample (default: audit.sample, 3000; "
                        "0: all). About 11 copies each: 3,000 captions took 4.5-7 min on 2 CPU cores with MiniLM; "
                        "the cost grows with N, not with the corpus")
    parser.add_argument("--seed", type=int, help="the sample's, the perturbations' and the bootstrap's seed "
                                                 "(default: audit.seed)")
    parser.add_argument("--kinds", help="pair kinds, comma-separated (default: all): sentences,clauses,modifiers "
                        "(detail), colour,object,relation,swap (precision), repeat,stuff,keywords,shuffle,praise,"
                        "concat,hallucinate (hacks)")
    parser.add_argument("--no-pairs", action="store_true", help="do not write pairs.jsonl (every pair's text and "
                                                                 "score differences)")
    add_shared(parser, "protocol", "no-mlflow", "no-progress")


def run(args: argparse.Namespace) -> int:
    from cim.stages.audit import audit

    options = {"sample": args.sample, "seed": args.seed, "kinds": args.kinds,
               "write_pairs": False if args.no_pairs else None}
    report = audit(load(args), index_dir=args.index, manifest=args.manifest, captions=args.captions,
                   out_dir=args.out, progress=not args.no_progress, track=not args.no_mlflow, **options)
    for line in report["verdicts"].values():
        print(line)
    for line in report["warnings"]:
        print(f"warning: {line}")
    return 0
