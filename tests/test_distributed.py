"""The sharded contrastive loss over 2 gloo processes equals the single-process loss on the whole batch."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from anatcl_core.anatomy import rbf_kernel
from anatcl_core.distributed import all_gather_tensor, all_gather_with_grad
from anatcl_core.losses import weighted_contrastive_loss

N, V, D_IN, D_OUT, WORLD = 8, 2, 6, 4, 2


def _batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(N, V, D_IN, generator=gen), torch.rand(N, generator=gen) * 40 + 20


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D_OUT)


def _loss(model, x, age):
    z = F.normalize(model(x), dim=-1)
    return weighted_contrastive_loss(z, rbf_kernel(age, age, 5.0), 0.1, "expw")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x, age = _batch()
        shard = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        # 1) the gather alone: local gradient is world_size x the single-process gradient of the shard
        z_local = F.normalize(x[shard].clone(), dim=-1).requires_grad_(True)
        loss = weighted_contrastive_loss(all_gather_with_grad(z_local), rbf_kernel(
            all_gather_tensor(age[shard]), all_gather_tensor(age[shard]), 5.0), 0.1, "yaware")
        loss.backward()
        # 2) the full stack: DistributedDataParallel averages parameter gradients over ranks
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        z = F.normalize(ddp(x[shard]), dim=-1)
        ages = all_gather_tensor(age[shard])
        ddp_loss = weighted_contrastive_loss(all_gather_with_grad(z), rbf_kernel(ages, ages, 5.0), 0.1, "expw")
        ddp_loss.backward()
        torch.save({"loss": loss.detach(), "grad_z": z_local.grad, "ddp_loss": ddp_loss.detach(),
                    "ddp_grads": [p.grad for p in ddp.module.parameters()]}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    x, age = _batch()
    z = F.normalize(x.clone(), dim=-1).requires_grad_(True)
    single = weighted_contrastive_loss(z, rbf_kernel(age, age, 5.0), 0.1, "yaware")
    single.backward()
    model = _model()
    single_ddp = _loss(model, x, age)
    single_ddp.backward()

    for rank, out in enumerate(ranks):
        shard = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        torch.testing.assert_close(out["loss"], single.detach())
        torch.testing.assert_close(out["grad_z"] / WORLD, z.grad[shard])
        torch.testing.assert_close(out["ddp_loss"], single_ddp.detach())
        for got, expected in zip(out["ddp_grads"], model.parameters()):
            torch.testing.assert_close(got, expected.grad)


def test_without_a_process_group_the_gather_is_the_identity():
    t = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(t) is t and all_gather_tensor(t) is t
