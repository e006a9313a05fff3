"""`cim publish`: the captioners' comparison (``<pipeline.out_dir>/captioners.json``) into MLflow, unless the
store already holds it for this pipeline execution: a run per captioner with every table metric, the table as
an artifact, each seed's metrics on its logged model. DVC runs it after every ``dvc repro`` (stage
``publish``, always run: it writes no file). The stage: :mod:`cim.stages.publish`."""
from __future__ import annotations

import json

from cim.cli import add_out, load


def add_arguments(parser) -> None:
    add_out(parser, help="the folder `cim compare --out` wrote, read (default: pipeline.out_dir)")


def run(args) -> int:
    from cim.stages.publish import publish

    print(json.dumps(publish(load(args), args.out)))
    return 0
