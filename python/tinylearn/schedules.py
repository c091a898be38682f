"""Learning-rate schedules over training steps, as keras.optimizers.schedules; pass one as an
optimizer's learning_rate. They are evaluated in C++ at every step."""

from __future__ import annotations

__all__ = ["CosineDecay", "ExponentialDecay", "LearningRateSchedule", "from_config"]


class LearningRateSchedule:
    kind = ""

    def __init__(self, initial_learning_rate: float, decay_steps: int):
        if not float(initial_learning_rate) > 0:
            raise ValueError(f"{type(self).__name__}: initial_learning_rate must be positive, got {initial_learning_rate!r}")
        if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"{type(self).__name__}: decay_steps must be a positive integer, got {decay_steps!r}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), decay_steps

    def get_config(self) -> dict:
        return {"schedule": self.kind, "initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps}


class ExponentialDecay(LearningRateSchedule):
    """lr(step) = initial * decay_rate ^ (step / decay_steps) (floored with staircase)."""

    kind = "exponential_decay"

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False):
        super().__init__(initial_learning_rate, decay_steps)
        self.decay_rate, self.staircase = float(decay_rate), bool(staircase)

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (int(p) if self.staircase else p)

    def get_config(self) -> dict:
        return {**super().get_config(), "decay_rate": self.decay_rate, "staircase": self.staircase}


class CosineDecay(LearningRateSchedule):
    """lr(step) = initial * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 + alpha)."""

    kind = "cosine_decay"

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0):
        super().__init__(initial_learning_rate, decay_steps)
        self.alpha = float(alpha)

    def __call__(self, step: int) -> float:
        import math

        p = min(step, self.decay_steps) / self.decay_steps
        return self.initial_learning_rate * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * p)) + self.alpha)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha}


def from_config(config: dict) -> LearningRateSchedule:
    config = dict(config)
    kind = config.pop("schedule")
    classes = {c.kind: c for c in (ExponentialDecay, CosineDecay)}
    if kind not in classes:
        raise ValueError(f"unknown learning-rate schedule {kind!r}")
    return classes[kind](**config)
