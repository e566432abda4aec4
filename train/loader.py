"""Micro-batches of a run, decoded and processed ahead of the step that trains on them.

Decoding a sample's cached frames (vlm.video) and running the video processor are CPU work:
a 3.2-min 720p video costs seconds of decode. Inside the step that is time the accelerator sits
idle, so a torch DataLoader with `data.num_workers` processes prepares the next micro-batches
(`data.prefetch_factor` each) while the current one trains. With 0 workers the same code runs
inside the step.

Micro-batch m of a run (m = step x grad_accum_steps + i) holds the prompts
`batch_indices(n, batch_size, m, ...)`: the order is a pure function of (seed, m, rank), so
workers, a resumed run and a run without workers all see the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .data import CacheSamples, Sample, batch_indices, process


@dataclass
class LoadedBatch:
    """One micro-batch on the host: sample indices, decoded samples and prompt tensors."""

    micro_batch: int
    indices: list[int]
    samples: list[Sample]
    prompts: Any


class MicroBatches(torch.utils.data.Dataset):
    """This rank's micro-batches `first`, `first + 1`, ..., `first + count - 1` of a run.

    Args:
        samples: the run's (video, question) pairs (decoded on access).
        processor: the Qwen2.5-VL processor (prompt tensors are built in the worker).
        batch_size: prompts per micro-batch and rank.
        seed, shuffle: the sample order (train.data.epoch_order).
        rank, world_size: data parallel position.
        first: the first micro-batch number (resume: start step x grad_accum_steps).
        count: how many micro-batches.
    """

    def __init__(self, samples: CacheSamples, processor, batch_size: int, seed: int,
                 shuffle: bool, rank: int, world_size: int, first: int, count: int):
        self.samples, self.processor = samples, processor
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.first, self.count = first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, j: int) -> LoadedBatch:
        if not 0 <= j < self.count:
            raise IndexError(j)
        m = self.first + j
        idx = batch_indices(len(self.samples), self.batch_size, m, self.seed, self.shuffle,
                            self.rank, self.world_size)
        samples = [self.samples[i] for i in idx]
        return LoadedBatch(micro_batch=m, indices=idx, samples=samples,
                           prompts=process(self.processor, samples))


def _as_is(item: LoadedBatch) -> LoadedBatch:
    return item


def batch_loader(dataset: MicroBatches, num_workers: int = 0, prefetch_factor: int = 2
                 ) -> Iterator[LoadedBatch]:
    """The micro-batches in order; with workers, each prepared `prefetch_factor` ahead.

    Worker processes are started once and live for the whole run (persistent); an error in a
    worker (a missing video file, a bad frame index) is raised in the trainer at the micro-batch
    it belongs to. The loader's own seed comes from a private generator, so starting workers
    leaves the trainer's torch RNG (rollout sampling) as it was.
    """
    if num_workers == 0:
        return (dataset[j] for j in range(len(dataset)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers,
        prefetch_factor=prefetch_factor, persistent_workers=True, collate_fn=_as_is,
        generator=torch.Generator().manual_seed(dataset.seed))
    return iter(loader)
