"""Two studies run for run on the same images: final top-1, discordant images, McNemar's test.

    python experiments/paired_runs.py A_DIR B_DIR [--out FILE.md]

Pairs the runs of two study folders by folder name (``towernet_simam-s0`` in A with the same
name in B) and compares their predictions.csv (the final epoch's prediction for every eval
image): top-1 of each, the images only A or only B gets right, the exact two-sided McNemar p
(binomial test on those discordant images), and how many images get the same predicted
class. For two settings that a study report would pool as one model -- the channels-last and
NCHW layouts, which train the same model under the same name. Standard library only.
"""
import argparse
import csv
import math
import statistics
import sys
from pathlib import Path


def predictions(run: Path) -> dict:
    """{image path: (label, predicted class)} from a run's predictions.csv."""
    with open(run / "predictions.csv", newline="") as f:
        return {row["path"]: (row["label"], row["pred"]) for row in csv.DictReader(f)}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p: a binomial(n, 1/2) test on the discordant images."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def mean_std(values: list) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def main(a_dir: Path, b_dir: Path, out: Path | None) -> int:
    names = sorted(p.parent.name for p in a_dir.glob("*/predictions.csv")
                   if (b_dir / p.parent.name / "predictions.csv").is_file())
    if not names:
        print(f"no run with predictions.csv in both {a_dir} and {b_dir}", file=sys.stderr)
        return 2
    lines = [f"| run | {a_dir.name} final top-1 | {b_dir.name} final top-1 | right only {a_dir.name} | "
             f"right only {b_dir.name} | McNemar p | same prediction |", "|---|---|---|---|---|---|---|"]
    acc_a, acc_b, pooled_a, pooled_b = [], [], 0, 0
    for name in names:
        a, b = predictions(a_dir / name), predictions(b_dir / name)
        common = sorted(set(a) & set(b))
        right_a = {p for p in common if a[p][0] == a[p][1]}
        right_b = {p for p in common if b[p][0] == b[p][1]}
        only_a, only_b = len(right_a - right_b), len(right_b - right_a)
        same = sum(a[p][1] == b[p][1] for p in common)
        acc_a.append(len(right_a) / len(common))
        acc_b.append(len(right_b) / len(common))
        pooled_a, pooled_b = pooled_a + only_a, pooled_b + only_b
        lines.append(f"| {name} | {acc_a[-1]:.4f} | {acc_b[-1]:.4f} | {only_a} | {only_b} | "
                     f"{mcnemar_p(only_a, only_b):.2f} | {same} / {len(common)} |")
    lines.append(f"| mean ± std | {mean_std(acc_a)} | {mean_std(acc_b)} | {pooled_a} pooled | "
                 f"{pooled_b} pooled | {mcnemar_p(pooled_a, pooled_b):.2f} | |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a_dir", type=Path)
    parser.add_argument("b_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    sys.exit(main(args.a_dir, args.b_dir, args.out))
