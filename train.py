"""Train a model: ``python train.py --model towernet_simam [--data DIR] [-o key=value ...]``.

Resolves the config (configs/default.yaml <- configs/<model or its family>.yaml or -c FILE <-
flags <- -o), then hands over to app.train.trainer (a study: app.study.runner).
``--resume RUN_DIR`` continues a run on its own config.
"""
import argparse
import sys

import app  # noqa: F401  (sets up the process before Paddle loads; must come first)

# isort: split
from app.config.load import load_config, parse_override
from app.config.resume import resume_config_overrides
from app.study.decide import DEFAULT_MARGIN, DEFAULT_MAX_UNITS, parse_margin
from app.util.errors import UserError, exit_on_user_error

FLAGS = {  # flag -> config key
    "data": "data.root", "epochs": "train.epochs", "batch_size": "train.batch_size",
    "lr": "optimizer.lr", "image_size": "data.image_size", "seed": "train.seed",
    "output": "output.dir", "device": "train.device", "name": "output.name",
    "pretrained": "model.pretrained",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="YAML config (default: configs/<model>.yaml, else "
                   "its family's: towernet.yaml, resnet50.yaml, mobilenet_v2.yaml)")
    p.add_argument("--model", help="registered model name (see --list-models)")
    p.add_argument("--recipe", help="training recipe layered on the model's config: "
                                    "reference (default), small_data (configs/recipes/) or "
                                    "a recipe YAML file of one's own")
    p.add_argument("--list-models", action="store_true", help="print model names and exit")
    p.add_argument("--data", help="split folder with train/ and eval/ (data.root)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per-device batch size")
    p.add_argument("--lr", type=float, help="initial learning rate of the cosine schedule")
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--output", help="folder holding all runs (default: runs)")
    p.add_argument("--name", help="run folder name (default: the model name)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"])
    p.add_argument("--pretrained", metavar="imagenet|PATH",
                   help="start from paddle.vision's ImageNet weights of the host, or a .pdparams")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last epoch")
    p.add_argument("--force-data", action="store_true",
                   help="--resume even though the split differs from the one the run started on")
    p.add_argument("--models", help="study: comma-separated models, each trained per seed")
    p.add_argument("--seeds", help="study: comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--folds", type=int, metavar="K",
                   help="study: K-fold cross-validation over the split's pooled images, a new "
                        "stratified partition per seed (--seeds 0,1,2,3,4 --folds 2 = 5x2cv)")
    p.add_argument("--versus", metavar="KEY=VALUE",
                   help="study: also train every model with this one change and decide it: "
                        "train.amp=bf16, recipe=small_data (or a recipe file), "
                        "pretrained=imagenet|PATH, or any section.key=value (optimizer.lr=0.05)")
    p.add_argument("--until-decided", action="store_true",
                   help="study: train whole units (every model at one seed x fold) one after "
                        "another and stop when each attention module is decided against its "
                        "host (and the --versus change against none; helps / cannot help by "
                        "--margin / hurts), at --max-units or before the next unit would pass "
                        "--budget")
    p.add_argument("--harmless", action="store_true",
                   help="--until-decided --versus: also stop once a loss of --margin or more "
                        "is ruled out for the change (for a change meant to cost nothing, "
                        "such as bf16)")
    p.add_argument("--margin", metavar="D",
                   help="study: the smallest gain in points of top-1 that would matter "
                        f"(default {DEFAULT_MARGIN:g}); decisions read their interval against 0 and D")
    p.add_argument("--max-units", type=int, metavar="N",
                   help=f"--until-decided: at most N units (default {DEFAULT_MAX_UNITS})")
    p.add_argument("--budget", metavar="TIME",
                   help="--until-decided: machine time for the whole study, e.g. 2h, 90m, 3600s "
                        "(over every invocation; the next unit must fit)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="study: train N runs at once, each in its own process with 1/N of the "
                        "cores (small networks train faster so on few cores; logs in OUTPUT/logs)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. -o data.num_workers=2 (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_models:
        from models import list_models
        from models.attention import list_attentions

        print("models:     " + " ".join(list_models()))
        print("attentions: " + " ".join(list_attentions()))
        return 0
    overrides = [(key, getattr(args, flag)) for flag, key in FLAGS.items()
                 if getattr(args, flag) is not None]
    overrides += [parse_override(o) for o in args.override]
    from app.run.folder import RunFolder
    from app.train import trainer  # Paddle loads here, not for --help or --list-models

    if (args.models or args.seeds or args.folds is not None or args.until_decided
            or args.versus is not None):
        return study(args, overrides)
    if args.jobs != 1:
        raise UserError("--jobs runs a study's runs side by side: give --models and/or --seeds")
    for flag in ("margin", "max_units", "budget"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} belongs to a study: give --models "
                            f"(and --until-decided)")
    if args.resume:
        cfg = resume_config_overrides(RunFolder(args.resume).read_config(), overrides,
                                      given_config=args.config or args.model)
    else:
        cfg = load_config(args.config, args.model, overrides, args.recipe)
    try:
        trainer.train(cfg, args.resume, force_data=args.force_data)
    except trainer.RunStopped as e:
        print(e, file=sys.stderr)
        return e.exit_code
    return 0


def _int_list(text: str, flag: str) -> list:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None


def study(args, overrides) -> int:
    """``--models a,b --seeds 0,1,2``: every model x seed into OUTPUT/<model>-s<seed>/
    (``--versus``: and each with one change); ``--until-decided``: units until the study is
    decided (app/study/sequential.py)."""
    from app.study.ledger import parse_budget
    from app.study.runner import parse_versus, run_study
    from app.study.sequential import run_until_decided
    from app.train import trainer

    if args.resume or args.name:
        raise UserError("--models/--seeds name their runs <model>-s<seed> and resume them "
                        "by themselves; drop --resume/--name")
    models = [m.strip() for m in (args.models or args.model or "").split(",") if m.strip()]
    if not models:
        raise UserError("a study (--seeds, --folds, --versus, --until-decided) needs --model or "
                        "--models")
    margin = parse_margin(args.margin)
    if not args.until_decided and (args.max_units is not None or args.budget is not None):
        raise UserError("--max-units and --budget limit a study run --until-decided")
    if args.harmless and not (args.until_decided and args.versus):
        raise UserError("--harmless is a stopping rule for the change of a study run "
                        "--until-decided --versus KEY=VALUE")
    if args.until_decided and args.seeds:
        raise UserError("--until-decided numbers its units itself (seed 0, then 1, ...; with "
                        "--folds K each seed's K folds in turn): drop --seeds")
    budget = parse_budget(args.budget) if args.budget is not None else None
    seeds = _int_list(args.seeds, "--seeds") if args.seeds else [args.seed or 0]
    overrides = [(k, v) for k, v in overrides if k not in ("train.seed", "output.name")]
    versus = None if args.versus is None else parse_versus(args.versus, overrides, args.recipe)
    try:
        if args.until_decided:
            run_until_decided(args.config, models, overrides, args.folds, args.recipe, args.jobs,
                              DEFAULT_MARGIN if margin is None else margin,
                              DEFAULT_MAX_UNITS if args.max_units is None else args.max_units,
                              budget, versus, args.harmless)
        else:
            run_study(args.config, models, seeds, overrides, args.folds, args.recipe, args.jobs,
                      margin, versus)
    except trainer.RunStopped as e:  # Ctrl-C: the runs stopped at their last epoch
        print(e, file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
