"""How well the model's frame usage α matches the prior over temporal groups (METHOD §5).

numpy only (no torch): shared by the trainer's CF reward and evaluation's focus metrics.
"""

from __future__ import annotations

import numpy as np

ALIGNMENTS = ("dot", "js")


def check_aligned(alpha_len: int, prior_len: int, where: str = "") -> None:
    """Raise if α (over groups) and the grouped prior differ in length (never truncate).

    Args:
        alpha_len: G from α.
        prior_len: length of `group_prior(p)` (K/2).
        where: context for the message (e.g. the sample's key).
    """
    if alpha_len != prior_len:
        raise ValueError(
            f"frame usage α has {alpha_len} temporal groups but the grouped prior has "
            f"{prior_len} (K = {2 * prior_len} frames){' for ' + where if where else ''}; the "
            "trainer must feed the model exactly the K frames the cache sampled"
        )


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence with base-2 logarithms, in [0, 1] (0·log 0 = 0)."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return min(1.0, max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def coverage(alpha: np.ndarray, p_group: np.ndarray, alignment: str = "dot") -> float:
    """r_cov between α and the grouped prior: Σ_g p_g α_g ("dot") or 1 - JS_2(p, α) ("js").

    Args:
        alpha: float [G], the model's frame usage (sums to 1).
        p_group: float [G], `group_prior(p)` (sums to 1).
        alignment: "dot" or "js".

    Returns:
        float in [0, 1].

    Raises:
        ValueError: lengths differ (never truncated) or unknown alignment.
    """
    a = np.asarray(alpha, np.float64).reshape(-1)
    p = np.asarray(p_group, np.float64).reshape(-1)
    check_aligned(a.shape[0], p.shape[0])
    if alignment == "dot":
        return float(np.dot(p, a))
    if alignment == "js":
        return 1.0 - js_divergence(p, a)
    raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
