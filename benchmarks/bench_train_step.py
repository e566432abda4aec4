"""Where the time of a CF-GRPO step goes, and the cost of the consensus-frame reward in it.

Builds a small cache (synthetic records, real mp4 clips made with OpenCV) in a temp directory,
runs a few GRPO steps with the real trainer (random weights) and reads its per-step timings:

    step_s    median wall time of a step (decode, generate, forward, rewards, update)
    shares    each phase's time / step time, summed over the timed steps: data (decode and
              processing, or only the wait for it with --workers), rollout (generate),
              reference (β > 0 forward), policy (forward + backward + optimizer), cf (α +
              prior lookup + r_cov)
    policy_forwards_per_step  calls of the policy's training forward (1 = no extra forward
              for α; the β > 0 reference forward is counted apart)

--family qwen3_vl (or qwen3_5) runs that family's tiny model after Qwen2.5-VL's in the same
process and prints `family_step_ratio`; a family that cannot share a prefill keeps generate on
the new path. --size tiny is the test model (CPU); --size 2b is a random model with
Qwen2-VL-2B's shapes, for a GPU (--device cuda, bf16): clips are then 448x252 and K = 32 by
default. Both run the real trainer on today's path (`rollout.engine: generate`,
`rollout.vision_once: false`) and then on the new
one (--paths both), the first step of each a warm-up; each prints
`train_step path=<p> step_s=<f> cf_share=<f> rollout_share=<f>` (DESIGN.md's target is
cf_share <= 0.02), then `train_step_speed step_speedup=<old/new>`.

--size vision is Qwen2.5-VL's real vision tower (32 layers, width 1280, 670M parameters) with a
2-layer LLM and K = 16 frames of 56x56 (128 patches a video): the tower is most of a forward, as
in a real video prompt, and a CPU run shows the ratios. At K = 4 (32 patches) the tower's matrix
products are bound by reading its weights, which no real video prompt is (measured: README).
It times the phases of one micro-batch directly (engine rollout, policy forward, backward + SGD
step, reference forward with the policy's weights), the two paths alternated in one process,
and prints the medians, the tower's measured share of a per-row forward, the FLOP bound
(ViT + LLM) / (ViT/G + LLM) and
`train_step_speed vision_once_forward_speedup=<f> prefill_once_rollout_speedup=<f>
step_speedup=<f>`.

    python benchmarks/bench_train_step.py [--steps 6] [--k 32] [--g 8] [--completion 64]
        [--device cpu|cuda] [--size tiny|vision|2b] [--paths both|old|new|rollouts] [--workers 0]
    python benchmarks/bench_train_step.py --device cuda --size 2b     # the GPU check
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helper modules, by their bare names

from synthetic_cache import make_question, make_video  # noqa: E402
from videocfr.cache_format import ShardWriter, finalize_cache  # noqa: E402

NUM_FILE_FRAMES = 300
FPS = 25.0


def write_video(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A 12 s clip of drifting colour bars (mp4v through OpenCV)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, w, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for i in range(NUM_FILE_FRAMES):
        frame = np.repeat(np.roll(base, 2 * i, axis=1), h, axis=0)
        writer.write(frame)
    writer.release()


def build_cache(root: Path, n_videos: int, k: int, size: tuple[int, int], dim: int = 16
                ) -> Path:
    """A finished cache of n_videos videos x 2 questions with random valid saliences."""
    cache = root / "cache"
    config = {"bench": "train_step", "num_frames": k}
    with ShardWriter(cache, config, embed_dim=dim,
                     model={"name": "bench", "pretrained": "random"}) as writer:
        for i in range(n_videos):
            vid = f"v{i:03d}"
            write_video(root / f"{vid}.mp4", seed=i, size=size)
            video = make_video(vid, k=k, dim=dim, seed=i, num_scenes=1,
                               num_frames=NUM_FILE_FRAMES, fps=FPS, path=f"{vid}.mp4")
            writer.add(video, [make_question(video, f"q{j}", seed=100 * i + j) for j in range(2)])
    finalize_cache(cache)
    return cache


SHARES = {"data": ("data_s",), "rollout": ("rollout_s", "shuffled_rollout_s"),
          "reference": ("reference_forward_s",), "policy": ("policy_forward_s", "update_s"),
          "cf": ("cf_s",)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (plus one warm-up)")
    parser.add_argument("--k", type=int, default=None,
                        help="cached frames per video (even; default 32, vision 16)")
    parser.add_argument("--g", type=int, default=8, help="completions per prompt")
    parser.add_argument("--completion", type=int, default=None,
                        help="max completion tokens (default 64 tiny, 80 2b, 16 vision)")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", choices=("tiny", "vision", "2b"), default="tiny",
                        help="random model shape (vlm.tiny.SHAPES); vision: phase by phase")
    parser.add_argument("--b", type=int, default=1, help="prompts per micro-batch (vision)")
    parser.add_argument("--paths", choices=("both", "old", "new", "rollouts"), default="both",
                        help="trainer runs: today's path (rollout.engine generate, "
                             "vision_once false), the new one, or both; rollouts: only the "
                             "two engines' rollouts on the tiny model, alternated")
    parser.add_argument("--workers", type=int, default=0,
                        help="data.num_workers: decode the next prompts during a step")
    parser.add_argument("--family", default="qwen2_5_vl",
                        help="model family (vlm.families); another than qwen2_5_vl runs "
                             "beside Qwen2.5-VL's in the same process (tiny size only)")
    args = parser.parse_args(argv)
    from videocfr.vlm.families import family_named

    family_named(args.family)  # an unregistered name: the registry's error
    if args.family != "qwen2_5_vl" and args.size != "tiny":
        parser.error(f"--family {args.family} has only the tiny shape; use --size tiny")
    logging.basicConfig(level=logging.WARNING)
    if args.size == "vision":
        if args.device != "cpu":
            parser.error("--size vision is the CPU shape; on a GPU use --size 2b")
        args.k = args.k or 16  # 128 patches a video: the tower compute-bound, as in a real prompt
        return vision_heavy(args)
    args.k = args.k or 32
    if args.paths == "rollouts":
        return rollouts_only(args)

    import torch
    from videocfr.train import phases

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
        return 2
    big = args.size == "2b"
    completion = args.completion or (80 if big else 64)
    size = (448, 252) if big else (160, 96)
    calls = {"policy": 0}
    real_forward = phases.policy_forward

    def counting_forward(model, rollout, temperature, hidden_states=False, vision_once=True):
        if model is not None and getattr(model, "training", False):
            calls["policy"] += 1
        return real_forward(model, rollout, temperature, hidden_states, vision_once)

    phases.policy_forward = counting_forward
    paths = {"both": ("old", "new"), "old": ("old",), "new": ("new",)}[args.paths]
    families = ["qwen2_5_vl"] + ([args.family] if args.family != "qwen2_5_vl" else [])
    step_medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = build_cache(root, n_videos=4, k=args.k, size=size)
        for fam in families:
            for name in paths:
                calls["policy"] = 0
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                rows = run_trainer(args, root, cache, size, completion, big, name, fam)
                step_medians[fam, name] = report(args, rows, calls, completion, name, fam)
    for fam in families:
        if len(paths) == 2:
            print(f"train_step_speed family={fam} step_speedup="
                  f"{step_medians[fam, 'old'] / step_medians[fam, 'new']:.2f} "
                  "(trainer runs, old then new)")
    if len(families) == 2:
        for name in paths:
            print(f"family_step_ratio path={name} {families[1]}/{families[0]}="
                  f"{step_medians[families[1], name] / step_medians[families[0], name]:.2f}")
    return 0


def rollout_of(path: str, family: str) -> dict:
    """The rollout section of a path; a family that cannot share a prefill keeps generate."""
    from videocfr.vlm.families import family_named

    if path == "old":
        return dict(OLD)
    new = dict(NEW)
    if family_named(family).prefill_once_unsupported:
        new["engine"] = "generate"
    return new


def run_trainer(args, root: Path, cache: Path, size, completion: int, big: bool, path: str,
                family: str = "qwen2_5_vl"):
    """args.steps + 1 trainer steps on today's path ("old") or the new one; the metric rows
    of the timed steps (the first is a warm-up)."""
    from videocfr.train import trainer as trainer_mod
    from videocfr.train.config import TrainConfig
    from videocfr.train.metrics import read_metrics

    model = {"tiny": True, "tiny_shape": args.size, "bf16": args.device == "cuda",
             "tiny_family": family}
    if big:  # the frames' own size (448x252): 144 visual tokens per temporal group
        model["video_max_pixels"] = size[0] * size[1]
    out = root / f"run-{family}-{path}"
    cfg = TrainConfig.from_dict({
        "model": model,
        "data": {"cache_dir": str(cache), "video_root": str(root), "num_workers": args.workers},
        "grpo": {"num_generations": args.g, "max_completion_length": completion,
                 "beta": args.beta, "learning_rate": 1e-3 if not big else 1e-6},
        "rollout": rollout_of(path, family),
        "run": {"max_steps": args.steps + 1, "output_dir": str(out), "checkpoint_every": 0,
                "device": args.device, "tensorboard": False},
    })
    trainer_mod.export_final = lambda *a, **k: None  # a 2B export is not what is timed
    trainer_mod.train(cfg)
    return read_metrics(out)[1:]  # drop the warm-up step


def report(args, rows, calls, completion: int, path: str, family: str = "qwen2_5_vl") -> float:
    """Print one path's step time, phase shares and CF share; returns the median step_s."""
    import torch

    step_s = float(np.median([r["step_s"] for r in rows]))
    total = sum(r["step_s"] for r in rows)
    shares = {name: sum(r.get(k, 0.0) for r in rows for k in keys) / total
              for name, keys in SHARES.items()}
    cf_ms = 1e3 * float(np.median([r["cf_s"] for r in rows]))
    peak = (f" peak_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}"
            if args.device == "cuda" else "")
    length = float(np.mean([r["completion_length"] for r in rows]))
    print(f"config family={family} path={path} rollout={rollout_of(path, family)} "
          f"size={args.size} "
          f"device={args.device} K={args.k} G={args.g} completion<={completion} "
          f"completion_mean={length:.1f} beta={args.beta} workers={args.workers} "
          f"timed_steps={len(rows)} torch_threads={torch.get_num_threads()}{peak}")
    print(f"shares family={family} "
          + " ".join(f"{name}={value:.3f}" for name, value in shares.items()))
    print(f"cf_ms_median={cf_ms:.3f} policy_forwards_per_step="
          f"{calls['policy'] / (args.steps + 1):.2f}")
    print(f"train_step family={family} path={path} step_s={step_s:.4f} "
          f"cf_share={shares['cf']:.5f} "
          f"rollout_share={shares['rollout']:.3f}")
    return step_s

def rollouts_only(args) -> int:
    """The two engines' rollouts of B = 2 tiny-model prompts, alternated --steps times: the
    decode loop's own cost (the tiny model's compute is small beside per-token overhead)."""
    import time

    import torch
    from videocfr.train.engines import Sampling, make_engine
    from videocfr.vlm.tiny import tiny_model_and_processor

    model, processor = tiny_model_and_processor(0)
    rng = np.random.default_rng(0)
    msg = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which?"}]}]
    text = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    frames = [rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8) for _ in range(2)]
    prompts = processor(text=[text] * 2, videos=frames, return_tensors="pt", padding=True)
    sampling = Sampling(args.completion or 24)
    times = {"generate": [], "shared_prefill": []}
    for rep in range(args.steps):
        for name in (list(times) if rep % 2 == 0 else list(times)[::-1]):
            t0 = time.perf_counter()
            make_engine(name).rollout(model, processor, prompts, num_generations=args.g,
                                      sampling=sampling)
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"rollouts_only size=tiny B=2 G={args.g} tokens<={sampling.max_new_tokens} "
          f"reps={args.steps} torch_threads={torch.get_num_threads()} "
          f"generate_s={med['generate']:.4f} shared_prefill_s={med['shared_prefill']:.4f} "
          f"speedup={med['generate'] / med['shared_prefill']:.2f}")
    return 0


# --- the vision-heavy shape: today's path against the new one, phase by phase ------------------

OLD = {"engine": "generate", "vision_once": False}  # the tower per row, the prompt per row
NEW = {"engine": "shared_prefill", "vision_once": True}


def flops_per_row(model, prompts, completion: int) -> tuple[float, float]:
    """Forward FLOPs of one row: (vision tower on its video, LLM on prompt + completion).

    2 x parameters x tokens for the linear layers (attention scores are a few percent here:
    tens of patches, under a hundred tokens); the LLM's embedding table does no FLOPs and its
    head runs on the completion + 1 positions only (logits_to_keep).
    """
    visual = model.model.visual
    patches = int(prompts["video_grid_thw"][0].prod())
    vit = 2.0 * sum(p.numel() for p in visual.parameters()) * patches
    lm = model.model.language_model
    body = sum(p.numel() for p in lm.parameters()) - lm.embed_tokens.weight.numel()
    tokens = prompts["input_ids"].shape[1] + completion
    head = model.lm_head.weight.numel() * (completion + 1)
    return vit, 2.0 * body * tokens + 2.0 * head


def vision_heavy(args) -> int:
    """Rollout, policy forward + backward, reference forward of one GRPO micro-batch, today's
    path and the new one alternated in one process (the median of each phase is reported)."""
    import time

    import torch
    from videocfr.train import qwen_vl
    from videocfr.train.engines import Sampling, make_engine
    from videocfr.train.grpo import grpo_loss
    from videocfr.train.rollout import policy_forward
    from videocfr.vlm.tiny import tiny_model_and_processor

    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(0, "vision")
    rng = np.random.default_rng(0)
    msg = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text":
            "What happens first? Answer with the option's letter."}]}]
    text = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    frames = [rng.integers(0, 255, (args.k, 56, 56, 3), dtype=np.uint8) for _ in range(args.b)]
    prompts = processor(text=[text] * args.b, videos=frames, return_tensors="pt", padding=True)
    completion = args.completion or 16
    sampling = Sampling(completion, temperature=1.0)
    G = args.g
    opt = torch.optim.SGD(model.parameters(), lr=1e-7)  # stateless: AdamW's 5 GB would not fit

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    def micro_batch(path) -> dict[str, float]:
        model.eval()
        rollout, t_roll = timed(lambda: make_engine(path["engine"]).rollout(
            model, processor, prompts, num_generations=G, sampling=sampling))
        model.train()
        (logp, hidden), t_fwd = timed(lambda: policy_forward(
            model, rollout, 1.0, hidden_states=True, vision_once=path["vision_once"]))
        adv = torch.linspace(-1, 1, logp.shape[0])
        loss = grpo_loss(logp, adv, rollout.completion_mask, old_logp=logp.detach(),
                         ref_logp=logp.detach(), epsilon=0.2, beta=0.04,
                         loss_type="sequence")[0]

        t0 = time.perf_counter()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t_bwd = time.perf_counter() - t0
        del logp, hidden, loss
        model.eval()
        with torch.no_grad():
            _, t_ref = timed(lambda: policy_forward(model, rollout, 1.0,
                                                    vision_once=path["vision_once"]))
            t_vit = math.nan
            if not path["vision_once"]:  # the tower alone on the B*G videos of a forward
                index = torch.arange(args.b).repeat_interleave(G)
                _, t_vit = timed(lambda: qwen_vl.video_outputs(
                    model, qwen_vl.repeat_pixels(prompts, index)))
        return {"rollout": t_roll, "policy_forward": t_fwd, "backward": t_bwd,
                "reference": t_ref, "vit_bg": t_vit,
                "completion": float(rollout.completion_mask.sum(1).mean())}

    runs = {"old": [], "new": []}
    micro_batch(NEW)  # warm-up (allocations, first-call costs), not timed
    for rep in range(args.steps):
        order = ("old", "new") if rep % 2 == 0 else ("new", "old")  # alternate: noisy machine
        for name in order:
            runs[name].append(micro_batch(OLD if name == "old" else NEW))
    med = {name: {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
           for name, rows in runs.items()}
    for m in med.values():
        m["step"] = m["rollout"] + m["policy_forward"] + m["backward"] + m["reference"]
    vit, llm = flops_per_row(model, prompts, completion)
    flop_bound = (vit + llm) / (vit / G + llm)
    share = med["old"]["vit_bg"] / med["old"]["reference"]  # measured, no-grad forward
    time_bound = 1.0 / (share / G + 1.0 - share)
    n_vit = sum(p.numel() for p in model.model.visual.parameters())
    print(f"config size=vision device=cpu B={args.b} G={G} K={args.k} frames=56x56 "
          f"patches_per_video={int(prompts['video_grid_thw'][0].prod())} "
          f"prompt_tokens={prompts['input_ids'].shape[1]} completion<={completion} "
          f"vit_params={n_vit / 1e6:.0f}M timed_reps={args.steps} "
          f"torch_threads={torch.get_num_threads()}")
    for name in ("old", "new"):
        m = med[name]
        print(f"phases_{name} " + " ".join(f"{k}_s={m[k]:.3f}" for k in
              ("rollout", "policy_forward", "backward", "reference", "step")) +
              f" completion_mean={m['completion']:.1f}")
    print(f"vit_share_of_forward={share:.3f} (measured: tower on B*G videos / per-row "
          f"reference forward) vit_flop_share={G * vit / (G * vit + G * llm):.3f} "
          f"flop_bound={flop_bound:.2f} time_bound={time_bound:.2f}")
    fwd = med["old"]["policy_forward"] / med["new"]["policy_forward"]
    print(f"train_step_speed vision_once_forward_speedup={fwd:.2f} "
          f"prefill_once_rollout_speedup={med['old']['rollout'] / med['new']['rollout']:.2f} "
          f"step_speedup={med['old']['step'] / med['new']['step']:.2f} "
          f"forward_vs_flop_bound={fwd / flop_bound:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
