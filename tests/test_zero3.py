"""CF-GRPO under DeepSpeed ZeRO-3: two CPU processes (gloo), two steps.

Each rank trains on its own prompts (two micro-batches accumulated into each update, decoded by a
background worker, under a warmup schedule); ZeRO-3 partitions the parameters (persistence
threshold 0, so even the tiny model's small tensors are sharded) and generation runs with
synced_gpus. After
training, every rank gathers the full parameters and saves them: both ranks must hold the same
values, different from the initial ones, and the logged loss must be finite.

The first run on a machine JIT-builds a small DeepSpeed op with gcc (cached afterwards).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_data import make_train_cache
from videocfr.train.metrics import read_metrics
from videocfr.vlm.tiny import tiny_qwen2_5_vl

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys
from pathlib import Path

import deepspeed
import torch

sys.path.insert(0, {tests!r})
from test_trainer import LengthReward

from videocfr.train import trainer as trainer_mod
from videocfr.train.config import TrainConfig

out = Path({out!r})
cfg = TrainConfig.from_dict(json.loads({cfg!r}))
original_export = trainer_mod.export_final


def export_and_dump(path, model, processor, engine, rank):
    params = list(model.named_parameters())
    partitioned = any(p.numel() == 0 for _, p in params)  # ZeRO-3 keeps a shard only
    with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None):
        full = {{name: p.detach().clone() for name, p in params}}
    torch.save({{"params": full, "partitioned": partitioned,
                "world": torch.distributed.get_world_size()}}, out / f"params-rank{{rank}}.pt")
    original_export(path, model, processor, engine, rank)


trainer_mod.export_final = export_and_dump
trainer_mod.train(cfg, extra_rewards=[LengthReward()])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_zero3_two_ranks_on_cpu(tmp_path):
    data = make_train_cache(tmp_path / "data", n_videos=2, n_questions=1)
    ds_config = json.loads((REPO / "configs" / "deepspeed" / "zero3.json").read_text())
    ds_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "zero3.json").write_text(json.dumps(ds_config))
    run_dir = tmp_path / "run"
    cfg = {
        "model": {"tiny": True, "tiny_seed": 0},
        "data": {"cache_dir": str(data["cache"]), "video_root": str(data["videos"]),
                 "num_workers": 1},
        "grpo": {"num_generations": 2, "max_completion_length": 8, "learning_rate": 1e-2,
                 "beta": 0.04, "grad_accum_steps": 2, "lr_schedule": "cosine",
                 "warmup_steps": 2},
        "run": {"max_steps": 2, "output_dir": str(run_dir), "checkpoint_every": 0,
                "device": "cpu", "deepspeed": str(tmp_path / "zero3.json"),
                "tensorboard": False},
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), out=str(tmp_path),
                                    cfg=json.dumps(cfg)))
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append(out)
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out[-4000:]}"

    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    # 2 ranks x 2 micro-batches x 1 prompt x G=2, summed; one update per step at the warmup rate
    assert all(r["samples"] == 8 for r in rows)
    assert [r["lr"] for r in rows] == [5e-3, 1e-2]

    r0 = torch.load(tmp_path / "params-rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "params-rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    assert r0["partitioned"] and r1["partitioned"], "ZeRO-3 did not partition the parameters"
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), f"{name} differs by rank"
    initial = dict(tiny_qwen2_5_vl(0).named_parameters())
    moved = [n for n, v in r0["params"].items() if not torch.equal(v, initial[n].detach())]
    assert len(moved) > len(initial) // 2, "the updates should move most parameter tensors"
