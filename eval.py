"""Evaluate a run, predict images, or compare runs.

  python eval.py --run runs/towernet_simam            # eval.json + confusion matrix + errors
  python eval.py --run runs/towernet_simam --image a.jpg b.jpg
  python eval.py --run runs/towernet_simam --attention-maps 6
  python eval.py --run runs/towernet_simam --export deploy/towernet_simam
  python eval.py --run runs/towernet_simam --export deploy/ts_onnx --format onnx [--opset 13]
  python eval.py --model-dir deploy/towernet_simam --image a.jpg   # paddle.inference or onnxruntime
  python eval.py --compare runs                       # table, compare.png, study report.md
  python eval.py --compare studies/scratch studies/finetune --out studies/both
  python eval.py --compare studies/cv5 --margin 1      # decide with a 1-point margin
  python eval.py --compare studies/bf16 --margin 1 --max-units 15   # seeds added by hand, looked at
  python eval.py --gradcam 8 --runs runs/towernet runs/towernet_simam [--target true|pred]
"""
import argparse
import sys
from pathlib import Path

import app  # noqa: F401  (sets up the process before Paddle loads; must come first)

# isort: split
from app.study.decide import MIN_UNITS, parse_margin
from app.util.errors import UserError, exit_on_user_error


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (uses its best.pdparams + best.json)")
    src.add_argument("--checkpoint", help="a .pdparams file with its .json (or best.json) beside it")
    src.add_argument("--compare", nargs="+", metavar="DIR",
                     help="compare every run below DIR (several: e.g. a from-scratch and a "
                          "fine-tuning study; the report goes to --out, default the first DIR)")
    src.add_argument("--runs", nargs="+", metavar="RUN",
                     help="several run folders: --gradcam compares them on the same images")
    src.add_argument("--model-dir", metavar="DIR",
                     help="an exported model (--export) to predict --image with, on the CPU")
    p.add_argument("--margin", metavar="D",
                   help="--compare: decide each comparison with this margin, in points of "
                        "top-1 (default: the study's, else 2)")
    p.add_argument("--max-units", type=int, metavar="N",
                   help="--compare: decide as a study that looks after every unit from the 5th "
                        "up to N (for seeds added by hand and looked at along the way; default: "
                        "the study's own plan, else one look at all units)")
    p.add_argument("--data", help="split folder to evaluate on (default: the run's own)")
    p.add_argument("--image", nargs="+", help="predict these image files instead")
    p.add_argument("--topk", type=int, default=5, help="predictions shown per image")
    p.add_argument("--attention-maps", type=int, metavar="N",
                   help="save attention_maps.png: N eval images with every attention layer")
    p.add_argument("--gradcam", type=int, metavar="N",
                   help="gradcam.png: N eval images (rows) x runs (columns), Grad-CAM at the "
                        "last conv stage; also logged to each run's VisualDL")
    p.add_argument("--target", choices=["pred", "true"], default="pred",
                   help="--gradcam explains the predicted (default) or the true class")
    p.add_argument("--seed", type=int, default=0, help="--gradcam's choice of images")
    p.add_argument("--export", metavar="DIR",
                   help="write the model as a Paddle inference model (or --format onnx) into DIR")
    p.add_argument("--format", choices=["paddle", "onnx"], default="paddle",
                   help="--export format (onnx: pip install -r requirements-deploy.txt)")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset for --format onnx (7-21)")
    p.add_argument("--tta", choices=["none", "flip"], default="none",
                   help="test-time augmentation for the evaluation and --image: flip averages "
                        "the probabilities of each image and its mirror image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="where to write results (default: the run folder)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    return p.parse_args(argv)


def make_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {path}: a file is in the way; name a folder") from None


def show_evaluation(result: dict, out_dir: Path) -> None:
    print(f"{result['model']} (epoch {result['epoch']}) on {result['num_images']} eval images "
          f"of {result['data']}{' (flip TTA)' if result.get('tta') == 'flip' else ''}: "
          f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}")
    width = max(len(c) for c in result["classes"])
    print(f"{'class'.ljust(width)}  precision  recall  images")
    for name, m in result["per_class"].items():
        print(f"{name.ljust(width)}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['support']:6d}")
    print(f"wrote {out_dir / 'eval.json'}, confusion_matrix.png, misclassified.png")


def attention_maps(weights, meta, args, out_dir: Path) -> int:
    from app.inspect import evaluate
    from app.inspect.attention_maps import save_attention_grid

    if args.attention_maps < 1:
        raise UserError("--attention-maps takes a positive number of images")
    network = evaluate.load_network(weights, meta)
    ds = evaluate.eval_dataset(meta, args.data)
    # Spread the picks over the classes: every k-th eval image, in class order.
    n = min(args.attention_maps, len(ds))
    indices = [round(i * (len(ds) - 1) / max(n - 1, 1)) for i in range(n)]
    maps = save_attention_grid(network, ds, indices, meta["classes"],
                               out_dir / "attention_maps.png")
    if not maps:
        print(f"{meta['model']} has no attention layers; the grid shows the images only")
    for layer in maps:
        print(f"{layer['name']}: {layer['kind']} {'x'.join(map(str, layer['values'].shape[1:]))}")
    print(f"wrote {out_dir / 'attention_maps.png'}")
    return 0


def gradcam_grid(args) -> int:
    """--gradcam N over --run R or --runs R1 R2 ...: the same images, one column per run."""
    from app.build.device import select_device
    from app.inspect.evaluate import find_checkpoint
    from app.inspect.gradcam import compare_gradcam

    if args.gradcam is None or args.gradcam < 1:
        given = "--runs" if args.runs else "--gradcam"
        raise UserError(f"{given}: Grad-CAM needs --gradcam N with N >= 1 images "
                        f"(over --run R or --runs R1 R2 ...)")
    select_device(args.device)
    runs = [Path(r) for r in (args.runs or [args.run])]
    loaded = [(run, *find_checkpoint(run)) for run in runs]
    out = Path(args.out or runs[0].parent)
    make_out_dir(out)
    path = compare_gradcam(loaded, args.gradcam, args.target, args.seed, out, args.data)
    print(f"wrote {path} ({args.gradcam} images x {len(runs)} runs, Grad-CAM of the "
          f"{'true' if args.target == 'true' else 'predicted'} class); added to each run's VisualDL")
    return 0


def deploy(args) -> int:
    """--export DIR (a run or checkpoint -> inference model), or --model-dir DIR --image."""
    from app.inspect import export
    from app.inspect.evaluate import find_checkpoint

    if args.model_dir:
        if not args.image:
            raise UserError("--model-dir predicts images: add --image FILE ...")
        for path, preds in export.predict_files(args.model_dir, args.image, args.topk):
            print(path + ": " + ", ".join(f"{c} {p:.3f}" for c, p in preds))
        return 0
    if args.image or not (args.run or args.checkpoint):
        raise UserError("--export exports a --run or --checkpoint; predict with --model-dir "
                        "DIR --image FILE afterwards")
    weights, meta = find_checkpoint(args.run, args.checkpoint)
    out = export.export_model(weights, meta, args.export, args.format, args.opset)
    print(f"exported {weights} ({meta['model']}, {args.format}, input [N, 3, "
          f"{meta['image_size']}, {meta['image_size']}], softmax output) to {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    margin = parse_margin(args.margin)
    if margin is not None and not args.compare:
        raise UserError("--margin decides the comparisons of --compare DIR")
    if args.max_units is not None and not args.compare:
        raise UserError("--max-units plans the looks of --compare DIR")
    if args.max_units is not None and args.max_units < MIN_UNITS:
        raise UserError(f"--max-units takes the most units the study may reach, at least "
                        f"{MIN_UNITS} (a decision needs {MIN_UNITS}); got {args.max_units}")
    from app.build.device import select_device  # Paddle loads here, not for --help
    from app.inspect import evaluate, figures
    from app.study.report import decisions_table, write_report
    from app.study.runs import collect_runs

    if args.compare:
        runs = collect_runs(args.compare)
        out = Path(args.out or args.compare[0])
        make_out_dir(out)
        print(figures.write_comparison(runs, out))
        summary = write_report(args.compare, out, margin, args.max_units)
        if summary["decisions"]:
            print("\n".join(["", *decisions_table(summary), ""]))
        print(f"wrote {out / 'compare.png'}, {out / 'report.md'}, report.json, study_curves.png")
        return 0
    if args.topk < 1 or args.batch_size < 1:
        raise UserError("--topk and --batch-size must be positive")
    if args.runs or args.gradcam is not None:
        return gradcam_grid(args)
    if args.model_dir or args.export:
        return deploy(args)
    select_device(args.device)
    weights, meta = evaluate.find_checkpoint(args.run, args.checkpoint)
    if args.image:
        for path, preds in evaluate.predict_files(weights, meta, args.image, args.topk,
                                                    args.tta == "flip"):
            print(path + ": " + ", ".join(f"{c} {p:.3f}" for c, p in preds))
        return 0
    out_dir = Path(args.out or weights.parent)
    make_out_dir(out_dir)
    if args.attention_maps is not None:
        return attention_maps(weights, meta, args, out_dir)
    result = evaluate.evaluate_checkpoint(weights, meta, out_dir, args.data, args.batch_size,
                                            args.tta == "flip")
    show_evaluation(result, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
