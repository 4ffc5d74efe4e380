"""What every mode shares: process-0 printing, the workdir check, the training call."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from cofre_jax import tasks
from cofre_jax.config.typed import Config


def print0(*args, **kwargs) -> None:
    """print on process 0 only: a multi-process job reports once."""
    if jax.process_index() == 0:
        print(*args, **kwargs)


def progress(message: str) -> None:
    """A timestamped progress line of a long evaluation, on process 0."""
    if jax.process_index() == 0:
        print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_workdir(workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"error: workdir {workdir} cannot be written: {e.strerror}") from e
    return workdir


def train(config: Config, workdir: str, **train_kwargs) -> dict:
    """The generic trainer on the task's data (`task.make_data`), resuming in workdir."""
    from cofre_jax import train as train_lib  # imports clu/TensorFlow: kept out of `describe`

    workdir = prepare_workdir(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
    if config.train.batch_size % jax.process_count():
        raise SystemExit(
            f"config error: train.batch_size={config.train.batch_size} must divide over "
            f"{jax.process_count()} processes"
        )
    task = tasks.get_task(config)
    make_data = lambda: task.make_data(jax.process_index(), jax.process_count())  # noqa: E731
    return train_lib.train_and_evaluate(config, workdir, make_data=make_data, **train_kwargs)
