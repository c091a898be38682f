"""Optimizers (hyper-parameters; the update rules run in C++), as keras.optimizers."""

from __future__ import annotations

__all__ = ["SGD", "Adam", "Optimizer", "from_config", "get"]


class Optimizer:
    name = ""

    def __init__(self, learning_rate: float):
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)

    def _config(self) -> dict:
        return {"optimizer": self.name, "learning_rate": self.learning_rate}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _config(self) -> dict:
        return {**super()._config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _config(self) -> dict:
        return {**super()._config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('adam', 'sgd') or an Optimizer instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in ("adam", "sgd"):
        return Adam() if identifier.lower() == "adam" else SGD()
    raise ValueError(f"unknown optimizer {identifier!r}; expected 'adam', 'sgd' or an Optimizer")


def from_config(config: dict) -> Optimizer:
    """An optimizer from Optimizer._config() (as saved in model files)."""
    config = dict(config)
    kind = config.pop("optimizer")
    classes = {"adam": Adam, "sgd": SGD}
    if kind not in classes:
        raise ValueError(f"unknown optimizer {kind!r}")
    return classes[kind](**config)
