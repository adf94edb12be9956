"""torchrun with 2 gloo processes: the engine's loss and gradients equal one process on the same global batch.

BatchNorm: SyncBatchNorm needs CUDA, so on CPU every rank normalises its own shard (ghost batch norm). The
single-process reference therefore runs the encoder shard by shard, then computes the loss on the whole batch.
On GPUs the engine converts BatchNorm to SyncBatchNorm and the statistics are those of the global batch.
"""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anatcl_core import load_checkpoint
from anatcl_core.encoder import AnatCLModel
from anatcl_core.pretrain import PretrainConfig, compute_loss, stop_agreed

N, V, WORLD = 8, 2, 2
SHAPE = (1, 16, 18, 16)


def _batch():
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(V, N, *SHAPE, generator=gen)                 # [V, N, 1, X, Y, Z]
    return views, torch.rand(N, generator=gen) * 60 + 10, torch.rand(N, 3, 68, generator=gen)


def _model():
    torch.manual_seed(0)
    return AnatCLModel("resnet18", 16)


def _config(method):
    return PretrainConfig(cohort="unused", method=method, out="unused", n_views=V, batch_size=N)


def _shard_views(views, rank):
    local = N // WORLD
    return views[:, rank * local:(rank + 1) * local].reshape(V * local, *SHAPE)   # view-major, as the engine


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir, method):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        views, age, desc = _batch()
        local = N // WORLD
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        out = ddp(_shard_views(views, rank))
        shard = slice(rank * local, (rank + 1) * local)
        loss, _ = compute_loss(_config(method), out, local, age[shard], desc[shard], (45.0, 20.0))
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": {k: p.grad for k, p in ddp.module.named_parameters()}},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["anatcl-local", "simclr"])
def test_two_ranks_equal_one_process_with_per_shard_batchnorm(tmp_path, method):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), method), nprocs=WORLD, join=True)
    views, age, desc = _batch()
    model = _model()
    local = N // WORLD
    # one process, same global batch: encoder run per shard (the BatchNorm of each rank), loss on all N subjects
    z = torch.cat([model(_shard_views(views, r)).reshape(V, local, -1) for r in range(WORLD)], dim=1)
    loss, _ = compute_loss(_config(method), z.reshape(V * N, -1), N, age, desc, (45.0, 20.0))
    loss.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_torchrun_cli_trains_and_its_checkpoint_loads(tiny_cohort, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                    str(_free_port()), "-m", "anatcl_core.pretrain", "--cohort", str(tiny_cohort.path),
                    "--method", "anatcl-global", "--out", str(out), "--epochs", "1", "--batch-size", "8",
                    "--n-folds", "3", "--max-steps-per-epoch", "2", "--no-progress"], check=True, env=env)
    model = load_checkpoint(out / "checkpoint.pth")
    assert model.arch == "resnet18"
    assert np.isfinite(np.loadtxt(out / "metrics.csv", delimiter=",", skiprows=1, usecols=1))


def _stop_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        # step 1: nobody signalled; step 2: only rank 1 got SIGTERM
        answers = [stop_agreed(False, WORLD, torch.device("cpu")), stop_agreed(rank == 1, WORLD, torch.device("cpu"))]
        torch.save(torch.tensor(answers), f"{out_dir}/stop{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_stop_signalled_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    mp.spawn(_stop_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        assert torch.load(tmp_path / f"stop{rank}.pt", weights_only=True).tolist() == [False, True]
    assert stop_agreed(True, 1, torch.device("cpu")) and not stop_agreed(False, 1, torch.device("cpu"))
