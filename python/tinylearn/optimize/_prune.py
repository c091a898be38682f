"""Magnitude pruning with tfmot's names: prune_low_magnitude, ConstantSparsity, PolynomialDecay,
UpdatePruningStep, strip_pruning. The masks live in the C++ training core
(cpp/include/tinylearn/train/pruning.h): updated on the schedule's steps, applied after every
optimizer step, saved with the weights."""

from __future__ import annotations

from numbers import Integral, Real

from .. import layers as L
from ..callbacks import Callback

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "UpdatePruningStep",
           "prune_low_magnitude", "strip_pruning"]

_PRUNABLE = (L.Dense, L.Conv2D, L.DepthwiseConv2D)


def _fraction(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    return float(v)


def _step(v, name: str, allow_minus_one: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or (v < 0 and not (allow_minus_one and v == -1)):
        raise ValueError(f"{name} must be a non-negative integer{' or -1' if allow_minus_one else ''}, got {v!r}")
    return int(v)


class PruningSchedule:
    """When to prune and to what sparsity, as tfmot's schedules: calling the schedule on a step
    gives (whether the mask is updated at that step, the target sparsity)."""

    def _prunes_at(self, step: int) -> bool:
        if step < self.begin_step or (self.end_step != -1 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0

    def __call__(self, step: int):
        return self._prunes_at(int(step)), self._sparsity(int(step))

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": self._config()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._config().items())})"


class ConstantSparsity(PruningSchedule):
    """`target_sparsity` from `begin_step` on, the mask updated every `frequency` steps until
    `end_step` (-1: to the end of training)."""

    def __init__(self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100):
        self.target_sparsity = _fraction(target_sparsity, "ConstantSparsity: target_sparsity")
        self.begin_step = _step(begin_step, "ConstantSparsity: begin_step")
        self.end_step = _step(end_step, "ConstantSparsity: end_step", allow_minus_one=True)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(f"ConstantSparsity: end_step ({end_step}) must be -1 or >= begin_step ({begin_step})")
        self.frequency = _step(frequency, "ConstantSparsity: frequency")
        if self.frequency < 1:
            raise ValueError("ConstantSparsity: frequency must be >= 1")

    def _sparsity(self, step: int) -> float:
        return self.target_sparsity

    def _config(self) -> dict:
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` between `begin_step` and
    `end_step`: final + (initial - final) * (1 - p)^power, p the fraction of the way (tfmot's)."""

    def __init__(self, initial_sparsity: float, final_sparsity: float, begin_step: int, end_step: int,
                 power: float = 3, frequency: int = 100):
        self.initial_sparsity = _fraction(initial_sparsity, "PolynomialDecay: initial_sparsity")
        self.final_sparsity = _fraction(final_sparsity, "PolynomialDecay: final_sparsity")
        self.begin_step = _step(begin_step, "PolynomialDecay: begin_step")
        self.end_step = _step(end_step, "PolynomialDecay: end_step")
        if self.end_step <= self.begin_step:
            raise ValueError(f"PolynomialDecay: end_step ({end_step}) must be > begin_step ({begin_step})")
        if isinstance(power, bool) or not isinstance(power, Real) or not float(power) > 0:
            raise ValueError(f"PolynomialDecay: power must be > 0, got {power!r}")
        self.power = float(power)
        self.frequency = _step(frequency, "PolynomialDecay: frequency")
        if self.frequency < 1:
            raise ValueError("PolynomialDecay: frequency must be >= 1")

    def _sparsity(self, step: int) -> float:
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def _config(self) -> dict:
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}


_SCHEDULES = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


class UpdatePruningStep(Callback):
    """Accepted for tfmot's habits (`callbacks=[tfmot.sparsity.keras.UpdatePruningStep()]`): in
    tinylearn each pruned layer counts its own training steps in the C++ core, so this does
    nothing and is not needed."""


def pruning_config(c: dict) -> dict:
    """A validated pruning configuration (as layers store it, and as model files hold it)."""
    if not isinstance(c, dict) or not isinstance(c.get("schedule"), dict):
        raise ValueError(f"pruning: expected a configuration dict with a schedule, got {c!r}")
    sched = c["schedule"]
    if sched.get("class_name") not in _SCHEDULES:
        raise ValueError(f"pruning: unknown schedule {sched.get('class_name')!r}; expected one of "
                         f"{sorted(_SCHEDULES)}")
    schedule = _SCHEDULES[sched["class_name"]](**sched["config"])
    block = tuple(c.get("block_size", (1, 1)))
    if len(block) != 2 or not all(isinstance(b, Integral) and not isinstance(b, bool) and b >= 1 for b in block):
        raise ValueError(f"pruning: block_size must be two positive integers, got {c.get('block_size')!r}")
    mn = c.get("sparsity_m_by_n")
    if mn is not None:
        mn = tuple(mn)
        if len(mn) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in mn) \
                or not 1 <= mn[0] < mn[1]:
            raise ValueError(f"pruning: sparsity_m_by_n must be (m, n) with 1 <= m < n (keep m of every "
                             f"n consecutive weights), got {c.get('sparsity_m_by_n')!r}")
    scope = c.get("scope", "layer")
    if scope not in ("layer", "global"):
        raise ValueError(f"pruning: scope must be 'layer' or 'global', got {scope!r}")
    if scope == "global" and block != (1, 1):
        raise ValueError("pruning: scope='global' ranks single weights; use block_size=(1, 1)")
    return {"schedule": schedule.get_config(), "block_size": list(block),
            "sparsity_m_by_n": None if mn is None else list(mn), "scope": scope}


def _copy(layer, pruning):
    config = layer.get_config()
    config.pop("pruning", None)
    new = L.from_config(layer.kind, config, layer.name)
    new.trainable = layer.trainable
    if pruning is not None:
        new.pruning = pruning
        new._state_arrays = 3
    return new


def _clone(model, pruning_of):
    """A copy of `model`'s graph, flattened, with each layer copied (pruning_of(layer) sets or
    removes its pruning) and the weights carried over (kernel and bias; pruning state dropped)."""
    from ..layers import Input
    from ..models import Model

    if not model.built:
        try:
            model.build()
        except ValueError:
            raise ValueError(f"model {model.name!r}: its input shape is unknown; give the first layer "
                             "input_shape (or build it)") from None
    copies, value = {}, {}
    trains = model._trainable_map()
    for t in model._order:
        if t.layer is None:
            value[id(t)] = Input(t.shape)
            continue
        if id(t.layer) not in copies:
            copies[id(t.layer)] = (_copy(t.layer, pruning_of(t.layer)), t.layer)
        new = copies[id(t.layer)][0]
        ins = [value[id(p)] for p in t.inputs]
        value[id(t)] = new(ins if len(ins) > 1 else ins[0])
    clone = Model(value[id(model._input)], value[id(model._output)], name=model.name)
    clone.build()
    for new, old in copies.values():
        w = old.get_weights()
        keep = len(w) - (3 if getattr(old, "pruning", None) is not None else 0)
        if getattr(new, "pruning", None) is not None:
            current = new.get_weights()
            new.set_weights(w[:keep] + current[len(current) - 3:])
        else:
            new.set_weights(w[:keep])
        new.trainable = trains[id(old)]
    return clone


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1), block_pooling_type: str = "AVG",
                        pruning_policy=None, sparsity_m_by_n=None, *, scope: str = "layer"):
    """Prunes the kernels of a model's Dense, Conv2D and DepthwiseConv2D layers (or of one layer)
    by magnitude while it trains (tfmot.sparsity.keras.prune_low_magnitude).

        pruned = tl.optimize.prune_low_magnitude(model, pruning_schedule=tl.optimize.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=2000))
        pruned.compile(...); pruned.fit(...)             # masks updated and applied in C++
        final = tl.optimize.strip_pruning(pruned)        # the same weights, zeros included

    On a model: a copy (layer names kept, weights carried over; `to_prune` is left as it was). On
    a layer: a copy of it, unbuilt, to place in a model being built.
    - pruning_schedule: ConstantSparsity or PolynomialDecay (default ConstantSparsity(0.5, 0)).
      Each pruned layer counts its own training steps (saved with it, so resumed training goes on
      where it stopped); at a step the schedule prunes at, the mask is recomputed from the
      kernel's magnitudes to the schedule's sparsity (a fraction of the kernel's weights rounded
      down); after every optimizer step the kernel is multiplied by its mask, so pruned weights
      stay exactly zero.
    - block_size=(rows, cols): blocks of the kernel seen as an (inputs, outputs) matrix pruned
      together by their mean magnitude (block_pooling_type "AVG"; Dense (in, units), Conv2D
      (kh * kw * in, filters), DepthwiseConv2D (kh * kw, channels * multiplier)).
    - sparsity_m_by_n=(m, n): of every n consecutive weights along the input axis of each output,
      at most m stay (the largest), e.g. (2, 4); applied with the magnitude mask at each update
      (for N:M alone give the schedule a target sparsity of 0).
    - scope="global" (beyond tfmot): one ranking of magnitudes over every pruned layer, so layers
      keep different fractions (the first pruned layer's schedule and step decide); "layer"
      (tfmot's): each layer to the schedule's sparsity.
    `pruning_policy` is not supported (None only); UpdatePruningStep() may be passed to fit and
    does nothing.
    """
    from ..models import Model

    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, 0)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise TypeError(f"prune_low_magnitude: pruning_schedule must be tl.optimize.ConstantSparsity or "
                        f"PolynomialDecay, got {type(pruning_schedule).__name__}")
    if block_pooling_type != "AVG":
        raise ValueError(f"prune_low_magnitude: block_pooling_type must be 'AVG', got {block_pooling_type!r}")
    if pruning_policy is not None:
        raise ValueError("prune_low_magnitude: pruning_policy is not supported; pass None")
    config = pruning_config({"schedule": pruning_schedule.get_config(), "block_size": block_size,
                             "sparsity_m_by_n": sparsity_m_by_n, "scope": scope})
    if isinstance(to_prune, Model):
        if any(getattr(la, "pruning", None) is not None for la in to_prune._leaves()):
            raise ValueError(f"prune_low_magnitude: model {to_prune.name!r} is already pruned "
                             "(strip_pruning it first)")
        return _clone(to_prune, lambda la: dict(config) if isinstance(la, _PRUNABLE) else None)
    if isinstance(to_prune, _PRUNABLE):
        return _copy(to_prune, dict(config))
    if isinstance(to_prune, L.Layer):
        raise ValueError(f"prune_low_magnitude: layer {to_prune.name!r} ({to_prune.kind}) has no kernel "
                         "to prune; Dense, Conv2D and DepthwiseConv2D do")
    raise TypeError(f"prune_low_magnitude: expected a tinylearn model or layer, got {type(to_prune).__name__}")


def strip_pruning(model):
    """A copy of `model` without pruning (tfmot.sparsity.keras.strip_pruning): the same weights,
    pruned zeros included, no masks; what tl.convert and save should get once training is done."""
    from ..models import Model

    if not isinstance(model, Model):
        raise TypeError(f"strip_pruning: expected a tinylearn model, got {type(model).__name__}")
    return _clone(model, lambda la: None)
