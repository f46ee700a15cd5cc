"""The script whose output is lightning-tqdm.log (or, with BAR=rich, lightning-rich.log)."""

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
x = torch.randn(128, 8)
y = x.sum(1, keepdim=True)
data = TensorDataset(x, y)
bar = [] if os.environ.get("BAR") == "rich" else [L.pytorch.callbacks.TQDMProgressBar()]
trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                    callbacks=bar)
trainer.fit(Tiny(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=64))
