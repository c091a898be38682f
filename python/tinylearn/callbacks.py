"""Callbacks for fit(), evaluate() and predict(), as keras.callbacks. Any callable
`f(epoch, logs)` works too in fit(); returning False from it stops training.

The training core runs whole epochs in C++ with the GIL released; it comes back to Python for
the hooks a callback defines and for no other:
- on_train_begin / on_epoch_begin / on_epoch_end / on_train_end: once each, as in Keras;
- on_train_batch_begin / on_train_batch_end (or their aliases on_batch_begin / on_batch_end):
  before and after every batch (a stride of 1, as Keras with steps_per_execution=1), only
  when some callback of the fit overrides one of them; otherwise fit does not return to Python
  between batches at all. Batch logs hold the epoch's running means ("loss", metrics);
  model.stop_training = True in a batch hook ends the epoch after that batch, then training;
- on_test_begin / on_test_end: around evaluate(), and around fit's validation pass;
- on_predict_begin / on_predict_end: around predict().
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np

from ._io import write_atomic

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "LambdaCallback", "LearningRateScheduler",
           "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN"]


class Callback:
    """Base class, with Keras's methods; override the hooks you need. `self.model` is the model
    being trained (evaluated, predicted); `self.params` holds fit's "verbose", "epochs" and
    "steps" (batches per epoch). Setting `self.model.stop_training = True` stops training."""

    model = None
    params: dict = {}

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params) -> None:
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_begin(self, batch, logs=None):
        """An alias of on_train_batch_begin (Keras's)."""

    def on_batch_end(self, batch, logs=None):
        """An alias of on_train_batch_end (Keras's)."""

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass


_HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))


def _overrides(callback, name: str) -> bool:
    """Whether `callback` has its own `name` hook (a subclass method or, as LambdaCallback
    sets them, an instance attribute)."""
    return name in vars(callback) or getattr(type(callback), name, None) is not getattr(Callback, name)


class _CallbackList:
    """The callbacks of one fit/evaluate/predict call, called in order as Keras's CallbackList."""

    def __init__(self, callbacks, model, params: dict):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def defines(self, *names) -> bool:
        return any(_overrides(c, n) for c in self.callbacks for n in names)

    def __call__(self, hook: str, *args, **kwargs) -> None:
        for c in self.callbacks:
            getattr(c, hook)(*args, **kwargs)


def _monitor_mode(monitor: str, mode: str, who: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode if mode != "auto" else ("max" if "acc" in monitor else "min")


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than `min_delta` for `patience`
    epochs, as keras.callbacks.EarlyStopping: with patience=3 and a loss that never improves
    after the first epoch, 4 epochs run. With `baseline`, an epoch must also beat it to reset
    the wait; epochs before `start_from_epoch` are not watched. A monitor missing from the logs
    (val_* without validation data) warns and is skipped."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline=None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        super().__init__()
        self.monitor, self.min_delta = monitor, abs(float(min_delta))
        self.patience, self.verbose = int(patience), verbose
        self.mode = _monitor_mode(monitor, mode, "EarlyStopping")
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def _improves(self, value, reference) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Sets the learning rate before each epoch to schedule(epoch, lr), or schedule(epoch) for a
    one-argument schedule (as Keras accepts both); epochs are numbered from fit's
    initial_epoch. The epoch's logs get "learning_rate", as in Keras."""

    def __init__(self, schedule, verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        try:
            inspect.signature(schedule).bind(0, 0.1)
            self._two_args = True
        except TypeError:  # takes no (epoch, lr): the one-argument form
            self._two_args = False
        except ValueError:  # no signature to inspect (some builtins): try both, as Keras does
            self._two_args = None

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.model.learning_rate
        if self._two_args is None:
            try:
                value = self.schedule(epoch, lr)
            except TypeError:
                value = self.schedule(epoch)
        else:
            value = self.schedule(epoch, lr) if self._two_args else self.schedule(epoch)
        if isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer)):
            raise TypeError(f"LearningRateScheduler: schedule must return a float, got {value!r} "
                            f"for epoch {epoch}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"LearningRateScheduler: schedule gave {value!r} for epoch {epoch}; "
                             "expected a positive finite learning rate")
        self.model.learning_rate = float(value)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(value)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.learning_rate


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` (never below `min_lr`) when `monitor` has not
    improved by more than `min_delta` for `patience` epochs, then waits `cooldown` epochs
    before watching again, as keras.callbacks.ReduceLROnPlateau. The epoch's logs get
    "learning_rate"; a monitor missing from the logs warns."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0):
        super().__init__()
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        if not float(min_lr) >= 0.0:
            raise ValueError(f"ReduceLROnPlateau: min_lr must be >= 0, got {min_lr!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.verbose, self.min_delta = verbose, float(min_delta)
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)
        self.mode = _monitor_mode(monitor, mode, "ReduceLROnPlateau")
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter = 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.model.learning_rate
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which "
                          f"is not available. Available metrics are: {','.join(logs)}.", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best, self.wait = value, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = self.model.learning_rate
                if old > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    self.model.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class ModelCheckpoint(Callback):
    """Saves the whole model to `filepath` (formatted with epoch and logs) after each epoch, or
    only when `monitor` improved with save_best_only (a monitor missing from the logs warns
    and saves nothing, as in Keras)."""

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        super().__init__()
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, bool(save_best_only)
        self.mode = _monitor_mode(monitor, mode, "ModelCheckpoint")
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(f"Can save best model only with {self.monitor} available, skipping.",
                              stacklevel=2)
                return
            if self.best is not None and not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class CSVLogger(Callback):
    """Writes each epoch's logs as a CSV row, as keras.callbacks.CSVLogger: columns "epoch"
    (Keras's index, from 0) and the first epoch's log keys in sorted order ("NA" where an
    epoch lacks one), `separator` between fields, Keras's line ending "\\r\\n".

    The row is appended to the file after every epoch in a single write (readers, and a run
    that dies between epochs, see whole rows only). At train begin the file is replaced by an
    empty one (atomically), or, with append=True, kept and added to, without a second header
    if it already has one."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep, self.append = separator, bool(append)
        self.keys, self._header = None, True

    def on_train_begin(self, logs=None):
        path = Path(self.filename)
        if self.append and path.exists():
            with open(path, "rb") as f:
                self._header = not f.readline()
        else:
            write_atomic(path, b"")
            self._header = True
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if getattr(self.model, "_fit_validates", False):  # val_* may come later (validation_freq)
                self.keys += sorted(f"val_{k}" for k in self.keys
                                    if not k.startswith("val_") and f"val_{k}" not in logs)
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.sep)
        if self._header:
            writer.writerow(["epoch", *self.keys])
            self._header = False
        writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
        fd = os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, out.getvalue().encode())
        finally:
            os.close(fd)


class LambdaCallback(Callback):
    """A callback from functions, as keras.callbacks.LambdaCallback:
    on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs), on_train_begin(logs),
    on_train_end(logs), on_train_batch_begin(batch, logs), on_train_batch_end(batch, logs);
    any other hook of Callback by keyword (on_batch_begin, on_batch_end, on_test_end, ...)."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for name, fn in hooks.items():
            if name not in _HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}; expected one of {sorted(_HOOKS)}")
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {fn!r}")
            setattr(self, name, fn)


class TerminateOnNaN(Callback):
    """Stops training after the first batch whose running loss is NaN or infinite, as
    keras.callbacks.TerminateOnNaN (a batch hook: fit returns to Python after every batch).
    With raise_error=True it raises RuntimeError instead (on_train_end is then not called)."""

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = bool(raise_error)

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   "Terminating training immediately.")
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
