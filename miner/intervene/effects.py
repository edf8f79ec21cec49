"""Effects of an intervention on a model's own output, as pure functions of the clean and edited outputs.

Per sentence the worker returns one output row per edit set (see `miner.intervene.worker`): the final sentence
embedding (encoders without a head: mean of the last hidden state over attended tokens, as sentence-transformers
pools), the mean next-token cross-entropy over the sentence's real next tokens (decoders), or the class logits
(a classification checkpoint). The metrics below compare an edited output with the clean one.
"""

from __future__ import annotations

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [N]: cosine similarity of matching rows (1.0 where both rows are zero).

    >>> cosine_rows(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), np.array([[2.0, 0.0], [-1.0, -1.0], [0.0, 0.0]]))
    array([ 1., -1.,  1.])
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dot / (na * nb)
    return np.where((na == 0) & (nb == 0), 1.0, np.nan_to_num(out, nan=0.0))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax is the label.

    >>> accuracy(np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 3.0]]), np.array([1, 1, 1]))
    0.6666666666666666
    """
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean()) if len(labels) else float("nan")


def flip_rate(clean_logits: np.ndarray, edited_logits: np.ndarray) -> float:
    """Share of rows whose predicted class changed.

    >>> flip_rate(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]]))
    0.5
    """
    if len(clean_logits) == 0:
        return float("nan")
    return float((np.asarray(clean_logits).argmax(1) != np.asarray(edited_logits).argmax(1)).mean())


def output_metrics(task: str, clean: np.ndarray, edited: np.ndarray, labels: np.ndarray | None,
                   ) -> list[tuple[str, float, float]]:
    """(metric, clean value, edited value) rows of one edit set's effect on the model's own output.

    embedding / masked_lm: embedding_cosine (clean 1.0); causal_lm: next_token_loss (mean over sentences);
    classification: flip_rate (clean 0.0) and, with labels, accuracy.

    >>> output_metrics("causal_lm", np.array([[2.0], [4.0]]), np.array([[3.0], [5.0]]), None)
    [('next_token_loss', 3.0, 4.0)]
    >>> output_metrics("classification", np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]]),
    ...                np.array([1, 0]))
    [('flip_rate', 0.0, 0.5), ('accuracy', 1.0, 0.5)]
    """
    if task == "causal_lm":
        c, e = np.asarray(clean)[:, 0], np.asarray(edited)[:, 0]
        ok = np.isfinite(c) & np.isfinite(e)  # a one-token sentence has no next token
        return [("next_token_loss", float(c[ok].mean()) if ok.any() else float("nan"),
                 float(e[ok].mean()) if ok.any() else float("nan"))]
    if task == "classification":
        rows = [("flip_rate", 0.0, flip_rate(clean, edited))]
        if labels is not None:
            rows.append(("accuracy", accuracy(clean, labels), accuracy(edited, labels)))
        return rows
    return [("embedding_cosine", 1.0, float(cosine_rows(clean, edited).mean()) if len(clean) else float("nan"))]
