"""Knowledge distillation (Hinton et al. 2015), shaped like Keras's "Knowledge Distillation"
example: a student learns from the labels and from a trained teacher's softened outputs, in the
C++ training core (no Python per batch)."""

from __future__ import annotations

import math
import types

import numpy as np

from .. import losses as _losses
from .. import optimizers as _optimizers
from .._validate import as_float_array
from ..models import Model, _inference_batch, _metric_entry, _sample_weights, _verbose

__all__ = ["Distiller"]

_STUDENT_LOSSES = (_losses.SparseCategoricalCrossentropy, _losses.CategoricalCrossentropy)


class _DistillationLoss(_losses.Loss):
    """The student's loss as the core computes it when distilling (see Distiller): `name` and
    `from_logits` are the student loss's; `core_distillation` carries alpha, the temperature and
    whether the teacher outputs logits."""

    def __init__(self, student_loss: _losses.Loss, alpha: float, temperature: float,
                 teacher_from_logits: bool):
        super().__init__(from_logits=student_loss.from_logits)
        self.name = student_loss.name
        self.core_distillation = {"distillation": True, "alpha": alpha, "temperature": temperature,
                                  "teacher_from_logits": teacher_from_logits}


def _ends_in_softmax(model: Model) -> bool:
    """Whether the model's output is a softmax (its outputs are probabilities, not logits)."""
    layer = model._output.layer
    while isinstance(layer, Model):  # a nested model: its own output layer
        layer = layer._output.layer
    if layer is None:
        return False
    return layer.get_config().get("activation") == "softmax"


class Distiller:
    """Trains `student` to match a trained `teacher` as well as the labels (Hinton et al. 2015),
    as Keras's "Knowledge Distillation" example:

        distiller = tl.optimize.Distiller(student=student, teacher=teacher)
        distiller.compile(optimizer="adam", metrics=["accuracy"],
                          student_loss_fn=tl.losses.SparseCategoricalCrossentropy(from_logits=True),
                          distillation_loss_fn=tl.losses.KLDivergence(), alpha=0.1, temperature=10)
        distiller.fit(x_train, y_train, epochs=3, seed=0)
        distiller.evaluate(x_test, y_test)
        small = distiller.student  # a tl.Model: save, tl.convert...

    The loss of a batch is
        alpha * student_loss(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T)),
    each term the mean over the batch, where s are the student's outputs and t the teacher's.
    It is computed, with its gradient, in the C++ training core. Outputs that are probabilities
    (a softmax output layer) enter the softened softmax as log-probabilities: the student's when
    `student_loss_fn` has from_logits=False, the teacher's when its output layer is a softmax
    (or `teacher_from_logits=False` in compile).

    The teacher stays frozen: its outputs are computed once per fit (and once for the
    validation data), in inference mode (BatchNormalization's moving statistics, no Dropout).
    tinylearn has no input augmentation, so the inputs do not change between epochs and once
    per fit gives the same targets as once per epoch.
    """

    def __init__(self, student: Model, teacher: Model):
        for what, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, Model):
                raise TypeError(f"Distiller: {what} must be a tl.Model, got {type(m).__name__}")
        if student is teacher:
            raise ValueError("Distiller: the student and the teacher are the same model")
        if not teacher.built:
            raise ValueError("Distiller: the teacher has no weights yet; train it (fit) or build it "
                             "before distilling from it")
        self.student = student
        self.teacher = teacher
        self.history = None
        self._compiled = None
        self._opt_state = None    # the optimizer's state between fits
        self._holds_core = None   # the student core this distiller's compile is in
        self._check_shapes()

    # -- configuration -------------------------------------------------------------------------
    def _check_shapes(self) -> None:
        s, t = self.student, self.teacher
        if s.input_shape is not None and tuple(s.input_shape) != tuple(t.input_shape):
            raise ValueError(f"Distiller: the teacher's input shape {_shape(t.input_shape)} differs from "
                             f"the student's {_shape(s.input_shape)}; both must take the same samples")
        if s.built and tuple(s.output_shape) != tuple(t.output_shape):
            raise ValueError(f"Distiller: the teacher's output shape {_shape(t.output_shape)} differs from "
                             f"the student's {_shape(s.output_shape)}; both must output the same classes")
        if len(t.output_shape) != 1:
            raise ValueError(f"Distiller: expected a teacher with outputs (None, classes), got "
                             f"{_shape(t.output_shape)}")

    def compile(self, optimizer="adam", metrics=None, student_loss_fn=None, distillation_loss_fn=None,
                alpha: float = 0.1, temperature: float = 3, *, teacher_from_logits: bool | None = None) -> None:
        """Keras's Distiller.compile. `student_loss_fn`: sparse or categorical crossentropy (a
        tl.losses object, name or function; its from_logits says whether the student outputs
        logits). `distillation_loss_fn`: KL divergence (None, tl.losses.KLDivergence(), "kld",
        "kl_divergence"), the only one the core computes. `alpha` in [0, 1] weighs the student
        loss, 1 - alpha the distillation term; `temperature` > 0 softens both distributions.
        `metrics`: "accuracy" or the matching categorical accuracy, computed on the labels.
        `teacher_from_logits` (keyword-only): whether the teacher outputs logits; None decides
        from its output layer (a softmax: probabilities)."""
        opt = _optimizers.get(optimizer)
        if student_loss_fn is None:
            raise TypeError("Distiller.compile: student_loss_fn is required (sparse or categorical "
                            "crossentropy, e.g. tl.losses.SparseCategoricalCrossentropy(from_logits=True))")
        student_loss = _losses.get(student_loss_fn)
        if not isinstance(student_loss, _STUDENT_LOSSES):
            raise ValueError(f"Distiller.compile: student_loss_fn must be sparse or categorical "
                             f"crossentropy, got {student_loss!r}")
        if distillation_loss_fn is not None:
            try:
                dl = _losses.get(distillation_loss_fn)
            except (TypeError, ValueError) as e:
                raise TypeError(f"Distiller.compile: distillation_loss_fn must be KL divergence "
                                f"(tl.losses.KLDivergence(), 'kld'), which the C++ core computes; got "
                                f"{distillation_loss_fn!r} ({e})") from None
            if not isinstance(dl, _losses.KLDivergence):
                raise ValueError(f"Distiller.compile: distillation_loss_fn must be KL divergence "
                                 f"(tl.losses.KLDivergence(), 'kld'), got {dl!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"Distiller.compile: alpha must be a number in [0, 1], got {alpha!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(float(temperature)) and float(temperature) > 0.0):
            raise ValueError(f"Distiller.compile: temperature must be a number > 0, got {temperature!r}")
        if teacher_from_logits is None:
            teacher_from_logits = not _ends_in_softmax(self.teacher)
        if isinstance(metrics, str):
            metrics = [metrics]
        metrics = list(metrics or [])
        for m in metrics:
            if not isinstance(m, str):
                raise TypeError(f"Distiller.compile: metrics are computed in the C++ core on the labels: "
                                f"give their names ('accuracy', ...), got {m!r}")
        plan = [_metric_entry(m, student_loss) for m in metrics]
        for name, kind, _ in plan:
            if kind not in ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy"):
                raise ValueError(f"Distiller.compile: metric {name!r} is not an accuracy; distillation "
                                 f"supports 'accuracy' and the categorical accuracies")
        loss = _DistillationLoss(student_loss, float(alpha), float(temperature), bool(teacher_from_logits))
        self._compiled = (opt, loss, metrics)
        self._metric_plan = plan
        self._student_loss = student_loss
        self._opt_state = None
        self._holds_core = None
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.teacher_from_logits = bool(teacher_from_logits)

    # -- the student's core compiled for distillation ------------------------------------------
    def _enter(self):
        """Compiles the student's core for distillation (keeping this distiller's optimizer
        state); returns the student's own compile state, which _leave restores."""
        s = self.student
        saved = (s._compiled, s._metric_plan, s._compiled_frozen)
        s._compiled, s._metric_plan = self._compiled, self._metric_plan
        s._compiled_frozen = s._frozen_layers()
        if not (saved[0] is None and self._holds_core is not None and self._holds_core is s._core):
            s._compile_core()
            if self._opt_state is not None:
                s._core.set_optimizer_state(*self._opt_state)
        self._holds_core = s._core
        return saved

    def _leave(self, saved) -> None:
        s = self.student
        self._opt_state = s._core.get_optimizer_state()
        s._compiled, s._metric_plan, s._compiled_frozen = saved
        if saved[0] is not None:  # the student's own compile, back in its core
            s._compile_core()
            self._holds_core = None

    def _require_compiled(self, what: str) -> None:
        if self._compiled is None:
            raise RuntimeError(f"Distiller.{what}: call distiller.compile(optimizer=..., "
                               f"student_loss_fn=..., ...) first")

    def _targets(self, x, y, name: str) -> np.ndarray:
        """Rows [label, teacher outputs...] (sparse loss) or [one-hot..., teacher outputs...]."""
        proxy = types.SimpleNamespace(_compiled=(None, self._student_loss, None),
                                      output_shape=self.student.output_shape)
        labels = Model._targets(proxy, y, name)
        if len(labels) != len(x):
            raise ValueError(f"{name}: x has {len(x)} samples but y has {len(labels)}")
        t = self.teacher.predict(x)
        return np.ascontiguousarray(np.concatenate([labels.reshape(len(x), -1), t], axis=1), dtype=np.float32)

    # -- training and inference ----------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, *, seed=None):
        """Trains the student (tl.Model.fit's arguments, in Keras's order; `seed` keyword-only
        drives the shuffling and, when the student has no weights yet, their initialization).
        The teacher's outputs for x (and for the validation data) are computed once, in
        inference mode, before training. `sample_weight` weighs both terms of each sample's
        loss; class_weight is refused. Returns a History whose keys are "loss" (the distillation
        loss that is minimized, with any L2 penalties), "student_loss", "distillation_loss"
        (the T^2-scaled KL term), the metrics, and "val_" versions of them."""
        self._require_compiled("fit")
        if class_weight is not None:
            raise ValueError("Distiller.fit: class_weight is not supported with distillation; pass "
                             "sample_weight (it weighs both terms of the loss)")
        s = self.student
        x = as_float_array(x, "fit: x", self.teacher.input_shape)
        s._prepare_fit(x, 0 if seed is None else seed)
        self._check_shapes()
        targets = self._targets(x, y, "fit: y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or "
                                 "(x_val, y_val, val_sample_weight)")
            xv = as_float_array(validation_data[0], "fit: validation x", self.teacher.input_shape)
            validation_data = (xv, self._targets(xv, validation_data[1], "fit: validation y"),
                               *validation_data[2:])
        saved = self._enter()
        try:
            self.history = s.fit(x, targets, batch_size, epochs, verbose, callbacks, validation_split,
                                 validation_data, shuffle, None, sample_weight, initial_epoch,
                                 steps_per_epoch, validation_steps, validation_batch_size,
                                 validation_freq, seed=seed)
        finally:
            self._leave(saved)
        return self.history

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 return_dict=False):
        """The student loss and the metrics on (x, y), as the Keras example's test_step: a list
        [student_loss, *metrics] in compile order, or with return_dict=True
        {"student_loss": ..., metric: ...}. `sample_weight` weighs the loss as in fit."""
        self._require_compiled("evaluate")
        s = self.student
        if not s.built:
            raise RuntimeError("Distiller.evaluate: the student has no weights yet; fit first")
        x = as_float_array(x, "evaluate: x", self.teacher.input_shape)
        self._check_shapes()
        targets = self._targets(x, y, "evaluate: y")
        sw = _sample_weights(sample_weight, len(x), "evaluate: sample_weight")
        batch_size = min(_inference_batch(batch_size, "evaluate: batch_size"), len(x))
        _verbose(verbose, "evaluate")
        saved = self._enter()
        try:
            # [loss, *metrics, student loss, distillation term]
            core = s._core.evaluate(x, targets, batch_size, sample_weight=sw)
        finally:
            self._leave(saved)
        logs = {"student_loss": float(core[len(self._metric_plan) + 1])}
        logs.update({name: float(v) for (name, _, _), v in zip(self._metric_plan, core[1:])})
        if return_dict:
            return logs
        return list(logs.values()) if len(logs) > 1 else logs["student_loss"]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None) -> np.ndarray:
        """The student's outputs for x (tl.Model.predict)."""
        return self.student.predict(x, batch_size, verbose, steps, callbacks)

    def __repr__(self) -> str:
        return f"Distiller(student={self.student.name!r}, teacher={self.teacher.name!r})"


def _shape(shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")"
