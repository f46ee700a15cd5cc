"""Data-parallel training across nodes with torch.distributed (CPU, gloo).

Each rank fits the same linear model on its own shard of synthetic data; gradients
are averaged with all_reduce, so every rank ends with the same weights. The
rendezvous comes from the environment nai sets on each node (env://): MASTER_ADDR,
MASTER_PORT, WORLD_SIZE and RANK. On GPUs, use the `nccl` backend and `torchrun`
(`torchrun --nnodes $WORLD_SIZE --node_rank $NODE_RANK ...`) in the same way.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank} of {world} on {os.uname().nodename}, "
          f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)

    torch.manual_seed(1234 + rank)  # each rank its own shard
    true_w = torch.tensor([2.0, -3.0, 0.5])
    x = torch.randn(256, 3)
    y = x @ true_w + 0.01 * torch.randn(256)
    w = torch.zeros(3, requires_grad=True)
    for step in range(args.steps):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        assert w.grad is not None
        dist.all_reduce(w.grad, op=dist.ReduceOp.SUM)
        with torch.no_grad():
            w -= 0.1 * w.grad / world
            w.grad.zero_()
        total = loss.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        if rank == 0:
            print(json.dumps({"step": step, "loss": round(total.item() / world, 5)}),
                  flush=True)
    if rank == 0:
        out = os.environ.get("NAI_OUTPUT_DIR", ".")
        torch.save(w.detach(), os.path.join(out, "weights.pt"))
        print(f"weights {[round(v, 3) for v in w.tolist()]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
