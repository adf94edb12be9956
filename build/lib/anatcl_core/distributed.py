"""Gathering a batch sharded over torchrun ranks so that the contrastive loss sees the global batch.

Convention: every rank gathers the embeddings of all ranks (with gradients) and computes the *same* loss over
the global batch. The backward of the gather sums, over ranks, the gradient each rank computed for every shard
and hands each rank the part for its own shard, i.e. `world_size * dL/dz_local`. DistributedDataParallel then
averages parameter gradients over ranks, which divides that factor back out: the parameters receive exactly the
gradient of the single-process loss on the whole batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), local.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)   # all_reduce works on gloo; reduce_scatter does not
        start = ctx.rank * ctx.size
        return grad[start:start + ctx.size]


def all_gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """[n_local, ...] on each rank -> [world_size * n_local, ...] in rank order, differentiable.

    Every rank must pass the same shape. Without an initialised process group this returns `local`.
    """
    if not is_distributed():
        return local
    return _GatherWithGrad.apply(local)


def all_gather_tensor(local: torch.Tensor) -> torch.Tensor:
    """Same as `all_gather_with_grad` for tensors that carry no gradient (ages, descriptors, indices)."""
    if not is_distributed():
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts, dim=0)
