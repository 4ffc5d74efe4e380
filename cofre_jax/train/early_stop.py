"""Stage policies: hooks of the generic training loop that may end a stage early.

The consistency stage (docs/method.md §2.4) is guarded by an early-stop rule against
over-sharpening: validation perplexity is measured before the stage's first step and at
every checkpoint; the first checkpoint above stage.early_stop_ratio x the starting value
is not written, the run stops, and the last good checkpoint stays the latest. Which
stages carry the rule is `cofre_jax.stages.STAGES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from cofre_jax import stages
from cofre_jax.config.typed import Config
from cofre_jax.io.json_file import write_json

EARLY_STOP_FILE = "early_stop.json"
STAGE_START_FILE = "stage_start.json"

Metrics = dict[str, float]
Log = Callable[[str], None]


def format_metrics(metrics: Metrics) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


class NoPolicy:
    """The loop's default: train to train.num_steps."""

    evaluates_checkpoints = False
    last_good: tuple[int, Metrics] | None = None

    def previous_result(self, log: Log) -> Metrics | None:
        """The final metrics of an earlier run that ended the stage, or None."""
        return None

    def begin(self, step: int, evaluate: Callable[[], Metrics], log: Log) -> Metrics | None:
        """Before the first step of this run: metrics of a fresh stage's start, which
        the loop checkpoints as the first good state, or None."""
        return None

    def stops_at(self, step: int, val: Metrics, evaluate_latest, log: Log) -> bool:
        """At a checkpoint with validation `val`: True to stop without saving it."""
        return False


class EarlyStop(NoPolicy):
    evaluates_checkpoints = True

    def __init__(self, ratio: float, workdir: str):
        self.ratio = ratio
        self.workdir = workdir
        self.start_perplexity = 0.0
        self.last_good = None

    def previous_result(self, log: Log) -> Metrics | None:
        path = os.path.join(self.workdir, EARLY_STOP_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            record = json.load(f)
        log(f"this stage stopped early before (see {path}); not training further")
        return record["last_good_metrics"]

    def begin(self, step: int, evaluate: Callable[[], Metrics], log: Log) -> Metrics | None:
        """The perplexity before the stage's first step, measured now or read from
        STAGE_START_FILE when an earlier run of this stage measured it."""
        path = os.path.join(self.workdir, STAGE_START_FILE)
        if os.path.exists(path):
            with open(path) as f:
                self.start_perplexity = float(json.load(f)["perplexity"])
            return None
        if step != 0:
            raise FileNotFoundError(
                f"{path} is missing but the run is at step {step}: the early-stop "
                "rule needs the perplexity measured before the stage's first step"
            )
        val = evaluate()
        log(f"stage start validation {format_metrics(val)}")
        os.makedirs(self.workdir, exist_ok=True)
        write_json(path, {"step": 0, **val})
        self.start_perplexity = val["perplexity"]
        self.last_good = (step, val)
        return val

    def stops_at(self, step: int, val: Metrics, evaluate_latest, log: Log) -> bool:
        if val["perplexity"] <= self.ratio * self.start_perplexity:
            self.last_good = (step, val)
            return False
        if self.last_good is None:  # resumed since the last good checkpoint
            self.last_good = evaluate_latest()
        good_step, good_val = self.last_good
        log(
            f"early stop at step {step}: validation perplexity {val['perplexity']:.4f} is "
            f"more than {self.ratio:g} x the stage's starting {self.start_perplexity:.4f}; "
            f"step {step} is not checkpointed and the last good checkpoint (step "
            f"{good_step}) stays the latest"
        )
        write_json(
            os.path.join(self.workdir, EARLY_STOP_FILE),
            {
                "step": step,
                "perplexity": val["perplexity"],
                "start_perplexity": self.start_perplexity,
                "ratio": self.ratio,
                "last_good_step": good_step,
                "last_good_metrics": good_val,
            },
        )
        return True


def stage_policy(config: Config, workdir: str) -> NoPolicy:
    ratio = config.stage.early_stop_ratio
    if ratio and stages.STAGES[config.stage.kind].early_stop:
        return EarlyStop(ratio, workdir)
    return NoPolicy()
