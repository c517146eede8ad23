"""Training with Lightning: the loop, schedule, metrics, checkpoints and progress bar."""
from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from . import distributed
from .arch import Arch
from .data import ClassificationData, CorruptImageError, DataShape, make_data
from .errors import UserError
from .layers.routers import Router
from .limits import check_training
from .models import build_model
from .recipe import TrainConfig
from .resume import ArchInCheckpoint, EpochSeed, check_resumable  # noqa: F401 (check_resumable: the CLI's)
from .run_logs import trial_log_callbacks


def resolve_device(device: str) -> str:
    """``auto`` picks the GPU when one is visible."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def loader_settings(device: str) -> dict:
    """DataLoader workers and pinned memory for the device: on a GPU, loading must keep up with it;
    on CPU, worker processes would compete with training for the same cores."""
    if resolve_device(device) == "cuda":
        return {"num_workers": min(8, os.cpu_count() or 1), "pin_memory": True}
    return {"num_workers": 0, "pin_memory": False}


def shape_of(arch: Arch) -> DataShape:
    """The data shape ``arch`` takes."""
    return DataShape(arch.in_channels, arch.input_size, arch.num_classes)


def training_data(dataset: str, shape: DataShape, config: TrainConfig, data_dir: Optional[str] = None,
                  download: bool = False) -> ClassificationData:
    """The data set called ``dataset``, of ``shape`` where the data set allows, split and batched as
    ``config`` says: what a retrain, every search trial and a supernet train on."""
    return make_data(dataset, data_dir=data_dir, download=download, seed=config.seed, batch_size=config.batch_size,
                     shape=shape, **loader_settings(config.device))


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Optimiser groups: the routers' parameters at ``lr * router_lr_scale`` without weight decay,
    everything else at ``lr`` with it. Weight decay pulls router logits towards uniform routing and
    their gradients are small next to the convolutions', so they get their own group."""
    router_params = {id(param) for module in model.modules() if isinstance(module, Router)
                     for param in module.parameters()}
    others = [param for param in model.parameters() if id(param) not in router_params]
    routers = [param for param in model.parameters() if id(param) in router_params]
    groups = [{"params": others, "weight_decay": config.weight_decay}]
    if routers:
        groups.append({"params": routers, "weight_decay": 0.0, "lr": config.lr * config.router_lr_scale})
    return groups


class Classifier(pl.LightningModule):
    """A network plus its loss, optimiser, cosine schedule and accuracy metrics."""

    def __init__(self, model: nn.Module, num_classes: int, config: TrainConfig, channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.config, self.channels_last = model, config, channels_last
        self.loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch, batch_index):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss became {loss.item()} at epoch {self.current_epoch}")
        self.train_accuracy(logits, labels)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_accuracy, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_index):
        images, labels = batch
        self.val_accuracy(self(images), labels)
        self.log("val_acc", self.val_accuracy, prog_bar=True)

    def test_step(self, batch, batch_index):
        images, labels = batch
        self.test_accuracy(self(images), labels)
        self.log("test_acc", self.test_accuracy)

    def configure_optimizers(self):
        cfg = self.config
        groups = parameter_groups(self.model, cfg)
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def check_data_matches(arch: Arch, data: ClassificationData) -> None:
    shape = data.shape
    expected = (arch.in_channels, arch.input_size, arch.num_classes)
    if expected != (shape.in_channels, shape.input_size, shape.num_classes):
        raise UserError(f"architecture expects {arch.in_channels}x{arch.input_size}x{arch.input_size} inputs and "
                        f"{arch.num_classes} classes, but {data.name} has {shape.in_channels}x{shape.input_size}x"
                        f"{shape.input_size} and {shape.num_classes}; fix in_channels/input_size/num_classes")


def make_trainer(config: TrainConfig, out_dir: Optional[Path], callbacks: Sequence[pl.Callback] = (),
                 progress: bool = True) -> pl.Trainer:
    device = resolve_device(config.device)
    checkpoints = []
    if out_dir is not None:
        # One file, rewritten after every epoch: what --resume continues from.
        checkpoints.append(pl.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last",
                                                        save_top_k=1, every_n_epochs=1, enable_version_counter=False))
    return pl.Trainer(
        max_epochs=config.epochs, accelerator="gpu" if device == "cuda" else "cpu",
        **distributed.trainer_options(config),
        precision="bf16-mixed" if device == "cuda" else "32-true",
        callbacks=[*checkpoints, *callbacks], logger=False, enable_checkpointing=bool(checkpoints),
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=out_dir,
        num_sanity_val_steps=0, deterministic=False,
    )


def train(arch: Arch, data: ClassificationData, config: TrainConfig, out_dir: Optional[Path] = None,
          callbacks: Sequence[pl.Callback] = (), progress: bool = True, test: bool = True,
          resume_from: Optional[Path] = None, model: Optional[nn.Module] = None) -> tuple[nn.Module, dict]:
    """Train the network ``arch`` describes (``model`` if given, else a new one) on ``data``;
    returns the model and its metrics. Process-wide settings (allocator, warnings, loggers) are the
    caller's: programs call :func:`mpn_nas.process.configure_process` once."""
    check_data_matches(arch, data)
    check_training(arch, config.batch_size)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(arch) if model is None else model
    on_gpu = resolve_device(config.device) == "cuda"
    if on_gpu and arch.member.family == "resnet":
        model = model.to(memory_format=torch.channels_last)
    module = Classifier(model, arch.num_classes, config, channels_last=on_gpu and arch.member.family == "resnet")
    last_stage = "test" if test else "fit"
    extra_callbacks = [*distributed.callbacks(config, last_stage), *trial_log_callbacks()]
    trainer = make_trainer(config, out_dir,
                           [EpochSeed(config.seed), ArchInCheckpoint(arch), *callbacks, *extra_callbacks], progress)
    data = distributed.data_for(data, config)
    if resume_from is not None:
        check_resumable(resume_from, arch)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None,
                    weights_only=True)
    except CorruptImageError as err:  # found mid-training: the last finished epoch's checkpoint stays
        kept = out_dir is not None and (out_dir / "checkpoints" / "last.ckpt").is_file()
        raise CorruptImageError(f"{err}, then continue from the last finished epoch with --resume" if kept
                                else str(err)) from None
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1); callers need to see the interrupt
            raise KeyboardInterrupt from None
        raise
    if "val_acc" not in trainer.callback_metrics:  # resumed from a checkpoint of the last epoch: nothing ran
        trainer.validate(module, datamodule=data, verbose=False)
    metrics = {"val_accuracy": _metric(trainer, "val_acc"), "epochs": config.epochs, **asdict(config),
               **distributed.run_facts(trainer, config)}
    if test:
        trainer.test(module, datamodule=data, verbose=False)
        metrics["test_accuracy"] = _metric(trainer, "test_acc")
    return model.cpu().to(memory_format=torch.contiguous_format), metrics


def _metric(trainer: pl.Trainer, name: str) -> float:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else math.nan
