"""`videocfr cache plot`: one cached video as a picture — what the prior is about, over time.

Top: a thumbnail strip of the K candidates, decoded at their cached frame indices (every few
candidates when K is large). Below, against time: the scene cuts, the stored saliences
(cache_format.fusion.SALIENCES: uniform, scene, semantic) and the consensus prior of one question
(the video's first by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache
from videocfr.cache_format.fusion import SALIENCES

MAX_THUMBS = 16
COLOURS = {"uniform": "0.6", "scene": "tab:green", "semantic": "tab:blue"}


def plot_video(cache: Cache, video_id: str, out: str | Path, question_id: str | None = None,
               video_root: str | Path | None = None) -> Path:
    """Write the figure of one video (and question) to `out` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from videocfr.vlm.decoders import cache_decoder

    from .frames import load_frames
    from .frames import video_root as root_of

    video = cache.video(video_id)
    if not video.ok:
        raise ValueError(f"video {video_id!r} failed in precompute ({video.error}); nothing "
                         f"to plot")
    qids = cache.question_ids(video_id)
    qid = question_id if question_id is not None else (qids[0] if qids else None)
    question = cache.question(video_id, qid) if qid is not None else None
    k = video.num_sampled
    shown = np.unique(np.linspace(0, k - 1, min(k, MAX_THUMBS)).round().astype(np.int64))
    root = root_of(cache, video_root)
    try:
        thumbs, _ = load_frames(root, video, shown, decoder=cache_decoder(cache.config))
        thumb_error = None
    except (OSError, ValueError, RuntimeError) as err:  # the figure still shows the curves
        thumbs, thumb_error = None, str(err)
    t = np.asarray(video.timestamps)
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(3, len(shown), height_ratios=[1.1, 1.6, 1.6], hspace=0.45)
    for i, pos in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        ax.axis("off")
        if thumbs is not None:
            ax.imshow(thumbs[i])
        ax.set_title(f"{t[pos]:.1f}s", fontsize=7)
    if thumb_error:
        fig.text(0.5, 0.9, f"thumbnails unavailable: {thumb_error[:110]}", ha="center",
                 fontsize=8, color="firebrick")
    cuts = [video.scenes[j, 0] / video.fps for j in range(1, len(video.scenes))]
    ax = fig.add_subplot(grid[1, :])
    if question is not None:
        for name in SALIENCES:  # other sources take matplotlib's next colour
            ax.plot(t, getattr(question, name), label=name, color=COLOURS.get(name),
                    marker=".", lw=1)
    reps = np.flatnonzero(video.scene_rep)
    ax.scatter(t[reps], np.full(reps.size, 1.05), marker="v", color="tab:green", s=18,
               label="scene representative")
    for c in cuts:
        ax.axvline(c, color="k", ls=":", lw=0.8)
    ax.set_ylabel("salience")
    ax.set_ylim(-0.05, 1.15)
    ax.legend(loc="upper right", fontsize=7, ncol=4)
    ax = fig.add_subplot(grid[2, :])
    if question is not None:
        ax.bar(t, question.prior, width=(t[-1] - t[0]) / max(k, 1) * 0.8 if k > 1 else 0.5,
               color="tab:orange", label="consensus prior")
        ax.legend(loc="upper right", fontsize=7)
    for c in cuts:
        ax.axvline(c, color="k", ls=":", lw=0.8)
    ax.set_xlabel("time (s)   dotted: scene cuts")
    ax.set_ylabel("prior")
    title = f"{video_id}: K = {k}, {len(video.scenes)} scenes"
    if question is not None:
        title += f"\n{qid}: {question.question[:90]}"
    fig.suptitle(title, fontsize=10)
    out = Path(out)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
