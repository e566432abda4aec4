"""The shared prefill and the vision tower once per prompt under DeepSpeed ZeRO-3 (2 CPU ranks),
for Qwen2.5-VL and Qwen3-VL (whose vision output carries DeepStack features).

Each rank has its own prompts (rank 0 two, rank 1 one) and its own completion cap, so the ranks
finish decoding at different steps and the shared prefill must keep joining the other rank's
forwards (synced_gpus). Checked on every rank: greedy completions equal generate's; log-probs,
loss and every parameter's full gradient (deepspeed.utils.safe_get_full_grad, two engines from
the same weights, one per path) equal the per-row forward within 1e-5 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_zero3 import free_port

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils import safe_get_full_grad

sys.path.insert(0, {tests!r})
from test_engines import prompts_of

from videocfr.train.engines import Sampling, make_engine
from videocfr.train.grpo import grpo_loss
from videocfr.train.rollout import policy_forward
from videocfr.vlm.families import family_named

deepspeed.init_distributed(dist_backend="gloo")
rank = torch.distributed.get_rank()
ds = json.loads({ds!r})


def engine_of():
    model, processor = family_named({family!r}).tiny(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return deepspeed.initialize(model=model, optimizer=opt, config=ds)[0], processor


sizes = [((56, 84), (56, 56)), ((56, 56),)][rank]
engines = {{}}
for vision_once in (False, True):
    engines[vision_once], processor = engine_of()
prompts = prompts_of(processor, sizes=sizes, seed=rank)
module = engines[True].module
greedy = Sampling(5 + 4 * rank, do_sample=False)
out = {{}}
for name, g in (("generate", 1), ("shared_prefill", 2)):
    r = make_engine(name).rollout(module, processor, prompts, num_generations=g, sampling=greedy,
                                  synced_gpus=True)
    out[name] = r.completion_ids[::g]
gen = torch.Generator().manual_seed(rank)
rollout = make_engine("shared_prefill").rollout(
    module, processor, prompts, num_generations=2, sampling=Sampling(6, temperature=0.9),
    synced_gpus=True, generator=gen)
for vision_once, engine in engines.items():
    engine.train()
    logp, _ = policy_forward(engine, rollout, 0.9, vision_once=vision_once)
    adv = torch.linspace(-1, 1, logp.shape[0])
    loss, _ = grpo_loss(logp, adv, rollout.completion_mask, old_logp=logp.detach(),
                        ref_logp=logp.detach() - 0.05, epsilon=0.2, beta=0.04,
                        loss_type="sequence")
    engine.backward(loss)
    grads = {{n: safe_get_full_grad(p).clone() for n, p in engine.module.named_parameters()}}
    out[vision_once] = {{"logp": logp.detach(), "loss": loss.detach(), "grads": grads}}
torch.save(out, Path({out!r}) / f"rank{{rank}}.pt")
# leave together: a rank exiting while gloo's threads still serve the other can abort
# ("terminate called without an active exception", seen once in CI)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
'''


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])  # Qwen3-VL: DeepStack features
def test_zero3_shared_prefill_and_vision_once(tmp_path, family):
    ds = json.loads((REPO / "configs" / "deepspeed" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    ds.update({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
               "train_batch_size": 2, "gradient_clipping": 0.0})
    ds.get("bf16", {})["enabled"] = False
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), out=str(tmp_path),
                                    ds=json.dumps(ds), family=family))
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
            outputs.append(p.communicate(timeout=900)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for rank, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{text[-4000:]}"
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["generate"].shape[1] == 5 + 4 * rank  # each rank kept its own cap
        assert torch.equal(r["shared_prefill"], r["generate"]), f"rank {rank} greedy differs"
        old, new = r[False], r[True]
        assert rel(new["logp"], old["logp"]) <= 1e-5 and rel(new["loss"], old["loss"]) <= 1e-5
        assert old["grads"].keys() == new["grads"].keys()
        for name, g in old["grads"].items():
            assert rel(new["grads"][name], g) <= 1e-5, f"rank {rank}: grad {name}"
        assert any(g.abs().sum() > 0 for n, g in old["grads"].items() if "visual" in n)
