"""The script whose output is hf-trainer.log: a tiny BERT trained by Trainer (no download)."""

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

torch.manual_seed(0)
rng = np.random.default_rng(0)
config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=2)
model = BertForSequenceClassification(config)


def rows(n):
    ids = rng.integers(1, 64, size=(n, 12))
    return [{"input_ids": torch.tensor(i), "labels": int(i[0] > 32)} for i in ids]


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


args = TrainingArguments(output_dir="/tmp/pt/hf-out", num_train_epochs=2,
                         per_device_train_batch_size=8, logging_steps=2,
                         eval_strategy="epoch", save_strategy="no", report_to=[],
                         use_cpu=True)
Trainer(model=model, args=args, train_dataset=rows(64), eval_dataset=rows(16),
        compute_metrics=accuracy).train()
