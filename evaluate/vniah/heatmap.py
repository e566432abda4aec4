"""V-NIAH heatmaps as LongVA draws them: x = haystack length, y = needle depth, colour = score.

Every panel carries the chance rate: under each length, the exact hit rate of n random
candidates of that length's haystacks (1 - C(K - m, n) / C(K, n)), and its range in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def grid(rows, strategy: str, n: int, haystack: str, needle: str, metric: str = "hit"
         ) -> tuple[list[float], list[float], np.ndarray]:
    """(lengths, depths, mean of `metric` [len(depths), len(lengths)]) of one panel (nan: none)."""
    sel = [r for r in rows if (r.strategy, r.n, r.haystack, r.needle)
           == (strategy, n, haystack, needle)]
    lengths = sorted({r.length_s for r in sel})
    depths = sorted({r.depth for r in sel})
    values = np.full((len(depths), len(lengths)), np.nan)
    for i, d in enumerate(depths):
        for j, length in enumerate(lengths):
            hits = [getattr(r, metric) for r in sel if r.depth == d and r.length_s == length
                    and getattr(r, metric) is not None]
            if hits:
                values[i, j] = float(np.mean(hits))
    return lengths, depths, values


def draw_heatmaps(rows, strategies: list[str], n: int, out: Path, metric: str = "hit"
                  ) -> list[Path]:
    """One PNG per strategy, a panel per (haystack kind, needle kind) — a row per haystack kind,
    a column per needle kind; returns the paths.

    metric: "hit" (needle hit rate) or "correct" (answer accuracy with a model).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    haystacks = sorted({r.haystack for r in rows})
    needles = sorted({r.needle for r in rows})
    paths = []
    for strategy in strategies:
        n_len = len({r.length_s for r in rows})
        width = max(3.6, 0.32 * n_len + 1.6)  # wide enough for one tick label per length
        fig, axes = plt.subplots(max(1, len(haystacks)), max(1, len(needles)),
                                 figsize=(width * max(1, len(needles)) + 1.2,
                                          (3.4 if n_len <= 8 else 3.9) * max(1, len(haystacks))),
                                 squeeze=False, layout="constrained")
        im = None
        panels = [(axes[i, j], hk, nk) for i, hk in enumerate(haystacks)
                  for j, nk in enumerate(needles)]
        for ax, hk, nk in panels:
            lengths, depths, values = grid(rows, strategy, n, hk, nk, metric)
            chance = [float(np.mean([r.chance for r in rows
                                     if (r.strategy, r.n, r.haystack, r.needle, r.length_s)
                                     == (strategy, n, hk, nk, length)] or [np.nan]))
                      for length in lengths]
            im = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="upper")
            many = len(lengths) > 8
            ax.set_xticks(range(len(lengths)),
                          [f"{x:g}" + (" · " if many else "\n") + f"{c:.3f}"
                           for x, c in zip(lengths, chance)], fontsize=7,
                          rotation=90 if many else 0)
            ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=8)
            ax.set_xlabel("haystack length (s) / chance", fontsize=8)
            ax.set_ylabel("needle depth", fontsize=8)
            finite = [c for c in chance if np.isfinite(c)]
            span = ("chance n/a" if not finite else f"chance {finite[0]:.3f}"
                    if max(finite) - min(finite) < 0.0005 else
                    f"chance {min(finite):.3f}-{max(finite):.3f}")
            ax.set_title(f"{hk} haystack, {nk} needle\n{span}", fontsize=9)
            if values.size <= 60:  # the numbers stay legible
                for i in range(values.shape[0]):
                    for j in range(values.shape[1]):
                        if np.isfinite(values[i, j]):
                            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                                    fontsize=7)
        label = "needle hit rate" if metric == "hit" else "answer accuracy"
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=label)
        fig.suptitle(f"V-NIAH: {strategy}, n = {n}", fontsize=10)
        safe = strategy.replace("@", "_at_").replace(":", "_").replace(",", "_").replace("=", "")
        path = out / f"vniah_{safe}_n{n}{'' if metric == 'hit' else '_accuracy'}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
