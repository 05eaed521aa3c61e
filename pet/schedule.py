"""The one-cycle learning-rate schedule of pet-train, for any number of optimiser steps.

The same schedule as torch's ``OneCycleLR(anneal_strategy="cos")`` (which earlier versions of
pet-train used, and whose saved state :meth:`OneCycle.load_state_dict` reads): the rate rises along
half a cosine from peak/``div_factor`` to the peak at step ``warmup_fraction`` × N − 1, then falls
along half a cosine to ``final_lr_ratio`` × peak at the last step N − 1; Adam's beta1 moves the
other way, from 0.95 down to 0.85 at the peak and back. OneCycleLR divides by zero when its warm-up
or its decay spans no step (e.g. N = 20 steps with a warm-up fraction of 0.05); here a warm-up of
no step starts at the peak, a run that is all warm-up ends at it, and a run of one step is at it.
"""

import math
from typing import List, Tuple

import torch

MOMENTA = (0.95, 0.85)
"""Adam's beta1 at the start (and end) of the cycle and at the peak of the rate (OneCycleLR's)."""


def _cosine(start: float, end: float, fraction: float) -> float:
    """From ``start`` (fraction 0) to ``end`` (fraction 1) along half a cosine."""
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def cycle_position(step: int, total_steps: int, warmup_fraction: float) -> Tuple[bool, float]:
    """(in the warm-up, fraction of that phase done) after ``step`` of ``total_steps`` steps."""
    peak, last = warmup_fraction * total_steps - 1, total_steps - 1
    if last == 0:  # a run of one step takes it at the peak
        return True, 1.0
    if 0 < peak and step <= peak:
        return True, step / peak
    if step >= last:
        return False, 1.0
    return False, (step - peak) / (last - peak)  # here peak <= step < last


def one_cycle(step: int, total_steps: int, warmup_fraction: float, final_lr_ratio: float,
              div_factor: float = 25.0) -> Tuple[float, float]:
    """(learning rate as a fraction of the peak, Adam's beta1) after ``step`` optimiser steps."""
    warming, fraction = cycle_position(step, total_steps, warmup_fraction)
    if warming:
        return _cosine(1.0 / div_factor, 1.0, fraction), _cosine(*MOMENTA, fraction)
    return _cosine(1.0, final_lr_ratio, fraction), _cosine(*reversed(MOMENTA), fraction)


class OneCycle:
    """Sets the learning rate and beta1 of every parameter group of an Adam ``optimizer`` by
    :func:`one_cycle`: at construction for step 0, then at each :meth:`step` (call it after each
    ``optimizer.step()``). ``state_dict``/``load_state_dict`` save and restore the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, total_steps: int,
                 warmup_fraction: float, final_lr_ratio: float):
        if total_steps < 1:
            raise ValueError(f"a schedule needs at least one step, got {total_steps}")
        self.optimizer, self.peak_lr, self.total_steps = optimizer, peak_lr, total_steps
        self.warmup_fraction, self.final_lr_ratio = warmup_fraction, final_lr_ratio
        self.last_epoch = 0  # OneCycleLR's name for the number of steps taken
        self._apply()

    def _apply(self) -> None:
        factor, beta1 = one_cycle(self.last_epoch, self.total_steps, self.warmup_fraction,
                                  self.final_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = self.peak_lr * factor
            group["betas"] = (beta1, *group["betas"][1:])

    def step(self) -> None:
        """Move on by one optimiser step."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        """The current learning rate of each parameter group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Continue after ``state["last_epoch"]`` steps (this class's state or OneCycleLR's)."""
        self.last_epoch = int(state["last_epoch"])
        self._apply()
