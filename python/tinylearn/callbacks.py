"""Callbacks run once per epoch during fit(), as keras.callbacks. Any callable
`f(epoch, logs)` works too; returning False from it stops training."""

from __future__ import annotations

import math

__all__ = ["Callback", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint"]


class Callback:
    """Base class: override on_train_begin / on_epoch_end / on_train_end. Setting
    `self.model.stop_training = True` stops training after this epoch."""

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs=None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        pass

    def on_train_end(self, logs=None) -> None:
        pass


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), int(patience)
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.restore_best_weights = bool(restore_best_weights)
        self.stopped_epoch = None

    def on_train_begin(self, logs=None) -> None:
        self.wait, self.best, self.best_weights, self.stopped_epoch = 0, None, None, None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.monitor not in (logs or {}):
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} is not among the logs "
                             f"{sorted(logs or {})} (val_* needs validation data)")
        value = logs[self.monitor]
        better = (self.best is None or
                  (value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta))
        if better:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Sets the learning rate before each epoch to schedule(epoch, lr)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("LearningRateScheduler: schedule must be callable(epoch, lr)")
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        lr = float(self.schedule(epoch, self.model.learning_rate))
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"LearningRateScheduler: schedule gave {lr!r} for epoch {epoch}")
        self.model.learning_rate = lr


class ModelCheckpoint(Callback):
    """Saves the whole model to `filepath` (formatted with epoch and logs) after each epoch, or
    only when `monitor` improved with save_best_only."""

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, bool(save_best_only)
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.best = None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"ModelCheckpoint: monitor {self.monitor!r} is not among the logs")
            if self.best is not None and not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))
