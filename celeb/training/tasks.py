"""The task adapters by name: what `TrainConfig.task` selects (each declares the metrics it reports)."""

from __future__ import annotations

import torch

from celeb.config import TrainConfig
from celeb.data.dataset import CelebData
from celeb.training.adapter import Task
from celeb.training.classifier_task import ClassifierTask
from celeb.training.cvae_task import CVAETask
from celeb.training.nvae_task import NVAETask

TASKS: dict[str, type[Task]] = {"cvae": CVAETask, "nvae": NVAETask, "classifier": ClassifierTask}


def make_task(config: TrainConfig, data: CelebData, device: torch.device) -> Task:
    return TASKS[config.task](config, data, device)

