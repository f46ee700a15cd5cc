"""Writes events with PyTorch's SummaryWriter, as a training script does."""
import torch
from torch.utils.tensorboard import SummaryWriter

w = SummaryWriter("tb/runs/exp")
for step in range(1, 4):
    w.add_scalar("Loss/train", 1.0 / step, step)
    w.add_scalars("acc", {"train": 0.5 + step / 10, "val": 0.4 + step / 10}, step)
w.add_histogram("weights", torch.arange(10.0), 3)
w.close()
