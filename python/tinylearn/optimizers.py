"""Optimizers (hyper-parameters; the update rules run in C++), as keras.optimizers."""

from __future__ import annotations

from . import schedules

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "from_config", "get", "schedules"]


class Optimizer:
    name = ""

    def __init__(self, learning_rate):
        self.schedule = None
        if isinstance(learning_rate, schedules.LearningRateSchedule):
            self.schedule = learning_rate
            learning_rate = learning_rate.initial_learning_rate
        if isinstance(learning_rate, bool) or not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number or a schedule, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)

    def _config(self) -> dict:
        return {"optimizer": self.name, "learning_rate": self.learning_rate,
                "schedule": self.schedule.get_config() if self.schedule else None}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _config(self) -> dict:
        return {**super()._config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _config(self) -> dict:
        return {**super()._config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (w -= lr * weight_decay * w each step), as keras.optimizers.AdamW."""

    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon)
        if not float(weight_decay) >= 0:
            raise ValueError(f"AdamW: weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)

    def _config(self) -> dict:
        return {**super()._config(), "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop as keras.optimizers.RMSprop (same defaults and update):
    v = rho v + (1 - rho) g^2; centered: a = rho a + (1 - rho) g, denominator v - a^2, else v;
    step = lr g / sqrt(denominator + epsilon); with momentum m = momentum m + step, w -= m;
    else w -= step."""

    name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False):
        super().__init__(learning_rate)
        if not 0.0 <= float(rho) < 1.0 or not 0.0 <= float(momentum) < 1.0 or not float(epsilon) > 0:
            raise ValueError(f"RMSprop: expected 0 <= rho < 1, 0 <= momentum < 1 and epsilon > 0, got "
                             f"rho={rho!r}, momentum={momentum!r}, epsilon={epsilon!r}")
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)

    def _config(self) -> dict:
        return {**super()._config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


_CLASSES = {"adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "sgd": SGD}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('adam', 'adamw', 'rmsprop', 'sgd', any case) or an Optimizer instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _CLASSES:
        return _CLASSES[identifier.lower()]()
    raise ValueError(f"unknown optimizer {identifier!r}; expected 'adam', 'adamw', 'rmsprop', 'sgd' "
                     f"or an Optimizer")


def from_config(config: dict) -> Optimizer:
    """An optimizer from Optimizer._config() (as saved in model files)."""
    config = dict(config)
    kind = config.pop("optimizer")
    schedule = config.pop("schedule", None)
    if kind not in _CLASSES:
        raise ValueError(f"unknown optimizer {kind!r}")
    if schedule:
        config["learning_rate"] = schedules.from_config(schedule)
    return _CLASSES[kind](**config)
