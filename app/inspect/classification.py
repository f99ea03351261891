"""Classification metrics from predicted probabilities, in numpy."""
import numpy as np


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores."""
    k = min(k, probs.shape[1])
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]``: images of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_report(probs: np.ndarray, labels: np.ndarray, classes: list) -> dict:
    """top1, top5, per-class precision/recall/accuracy/support and the confusion matrix.

    Per-class accuracy is the one-vs-rest accuracy (TP + TN) / N; recall is the fraction
    of the class's images predicted correctly. A class never predicted has precision 0.
    """
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, len(classes))
    n = cm.sum()
    per_class = {}
    for i, name in enumerate(classes):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        tn = n - support - predicted + tp
        per_class[name] = {
            "precision": float(tp / predicted) if predicted else 0.0,
            "recall": float(tp / support) if support else 0.0,
            "accuracy": float((tp + tn) / n) if n else 0.0,
            "support": int(support),
        }
    return {
        "num_images": int(n),
        "top1": topk_accuracy(probs, labels, 1),
        "top5": topk_accuracy(probs, labels, 5),
        "per_class": per_class,
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
    }
