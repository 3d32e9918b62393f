"""A device model's noise in data-parallel meta-training (meta/trainer.py, ``Shard.noise``): one process draws it
from the task stream as it always did (pinned bit for bit), each of several processes from its own stream,
derived from the config seed, its rank and the iteration (``process_generator``)."""

from __future__ import annotations

import torch

from eprop_l2l.meta.trainer import Shard, process_generator
from tests.workers import torchrun_workers
from tests.workers.device_noise import one_iteration

# one iteration of the tiny preset on the PCM model in one process, as the code before per-process streams drew it
ONE_PROCESS = {"loss": 65.64704895019531, "w_rec": -1.1426147390156984, "first_read": -6.324187792139128}


def test_one_process_draws_the_device_noise_it_always_drew():
    result = one_iteration(Shard())
    assert result["loss"] == ONE_PROCESS["loss"]
    assert float(result["w_rec"].double().sum()) == ONE_PROCESS["w_rec"]
    assert float(result["first_read"].double().sum()) == ONE_PROCESS["first_read"]


def test_process_streams_differ_by_rank_and_iteration_and_are_derived_again():
    draw = lambda *key: torch.randn(4, generator=process_generator(*key))  # noqa: E731
    assert torch.equal(draw(7, 1, 3), draw(7, 1, 3))
    for other in ((7, 0, 3), (7, 1, 4), (8, 1, 3)):
        assert not torch.equal(draw(7, 1, 3), draw(*other))


def test_two_processes_draw_independent_device_noise(tmp_path):
    prefix = tmp_path / "noise"
    torchrun_workers("device_noise.py", str(prefix))
    ranks = [torch.load(f"{prefix}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # both processes program the same initial weights: under one shared stream their first reads were equal
    assert not torch.equal(ranks[0]["first_read"], ranks[1]["first_read"])
    # each process's draws come from its seed, rank and iteration alone: the same as that rank's alone here
    for rank, launched in enumerate(ranks):
        alone = one_iteration(Shard(rank=rank, world_size=2))
        assert torch.equal(alone["first_read"], launched["first_read"])
    # the task stream, and the meta-parameters after the averaged step, stay the same on every process
    assert torch.equal(ranks[0]["generator"], ranks[1]["generator"])
    assert torch.equal(ranks[0]["w_rec"], ranks[1]["w_rec"])
