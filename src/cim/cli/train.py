"""`cim train`: GRPO with the CIM reward -- ``--backend verl`` (GPU cluster), ``--backend trl`` (TRL's
GRPOTrainer on one GPU, :mod:`cim.train.trl`; ``--preset`` then names its model) or ``--backend local`` (CPU).

verl: builds ``python -m verl.trainer.main_ppo <overrides>`` (:mod:`cim.train.verl.launch`), counts the
training rows verl's overlong-prompt filter will drop, starts the shared reward service (or finds it
running) and waits until it answers, opens an MLflow parent run and runs verl inside it (``MLFLOW_RUN_ID``:
verl's mlflow logger attaches to that run), then logs the checkpoint list to the run. The in-process scorer
(one per reward worker) is the explicit opt-in ``train.service.in_process=true``. ``--dry-run`` prints the
command and changes nothing. The stage: :mod:`cim.stages.train`.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging

from cim.cli import add_out, add_shared, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cim.config import choices

    parser.add_argument("--backend", choices=choices("train.backend"), default=None,
                        help="trainer backend (default train.backend)")
    parser.add_argument("--preset", default=None, help="verl / trl: model preset, configs/train/<name>.yaml")
    parser.add_argument("--setting", choices=choices("train.verl.setting"), default=None,
                        help="verl: start from the base model or an SFT checkpoint (train.verl.sft_checkpoint)")
    parser.add_argument("--dry-run", action="store_true", help="print the command (verl) or plan (local) and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the verl presets and exit")
    parser.add_argument("--variant", metavar="NAME",
                        help="local: train a row of the captioner comparison: the SFT start (pipeline.sft, into "
                             "<pipeline.checkpoint_dir>/NAME) or a GRPO variant (pipeline.variants) from it, with "
                             "--seed (into <pipeline.checkpoint_dir>/NAME-sSEED)")
    parser.add_argument("--seed", type=int, default=None,
                        help="with --variant: the GRPO seed (default: the first of pipeline.seeds)")
    add_out(parser, help="the run's checkpoint folder (local: train.local.out_dir; verl: train.verl.checkpoint_dir); "
                         "not with --variant, whose folder is <pipeline.checkpoint_dir>/NAME")
    add_shared(parser, "protocol", "no-mlflow", "no-progress")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.list_presets:
        from cim.presets import list_presets, load_preset

        for name in list_presets():
            print(f"{name:16s} {load_preset(name)['model']}")
        return 0
    extra = [f"train.backend={args.backend}"] if args.backend else []
    extra += [f"train.verl.preset={args.preset}"] if args.preset else []
    extra += [f"train.verl.setting={args.setting}"] if args.setting else []
    if args.out and args.variant:
        from cim.errors import ConfigError

        raise ConfigError("--out is for a run of its own; a pipeline run (--variant) trains into "
                          "<pipeline.checkpoint_dir>/NAME")
    extra += [f"train.local.out_dir={args.out}", f"train.verl.checkpoint_dir={args.out}",
              f"train.trl.out_dir={args.out}"] if args.out else []
    cfg = load(args, *extra)
    if args.preset and cfg.train.backend == "trl":   # --preset names the model of the backend that trains
        from cim.config import with_overrides

        cfg = with_overrides(cfg, {"train.trl.preset": args.preset})
    if args.variant and cfg.train.backend == "local" and not args.dry_run:
        from cim.stages import run_steps
        from cim.pipeline.plan import train_step

        trained = train_step(cfg, args.variant, args.seed)   # its folders: the run plan's
        if args.no_mlflow:
            trained = dataclasses.replace(trained, args={**trained.args, "track": False})
        run_steps(cfg, [trained], progress=not args.no_progress)
        return 0
    from cim.stages.train import train

    return int(train(cfg, dry_run=args.dry_run, progress=not args.no_progress,
                     track=not args.no_mlflow)["returncode"])
