"""Structured pruning: tl.optimize.prune_filters returns a physically smaller model."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from .. import layers as L

__all__ = ["prune_filters"]

# Layers whose output channels are their input's (channel c stays channel c).
_PASS = (L.BatchNormalization, L.Activation, L.MaxPooling2D, L.AveragePooling2D,
         L.GlobalAveragePooling2D, L.Dropout)


class _Groups:
    """Union-find over channel spaces: tensors whose channels must be pruned together."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.frozen: set[int] = set()

    def new(self, key: int) -> int:
        self.parent[key] = key
        return key

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.frozen:
                self.frozen.add(ra)

    def freeze(self, k: int) -> None:
        self.frozen.add(self.find(k))

    def is_frozen(self, k: int) -> bool:
        return self.find(k) in self.frozen


def prune_filters(model, fraction: float | None = None, *, target_macs: int | None = None,
                  criterion: str = "l1"):
    """A physically smaller copy of `model`: whole Conv2D filters, Dense units and the depthwise
    channels that follow them removed, with their BatchNormalization channels and the next layers'
    input channels (Li et al. 2017's filter pruning; tfmot has none). Fine-tune it with fit.

        small = tl.optimize.prune_filters(model, fraction=0.5)          # half of each layer's filters
        small = tl.optimize.prune_filters(model, target_macs=model_macs // 2)

    - fraction: the share of filters removed from every prunable layer (rounded down, at least
      one filter kept); target_macs: instead, the smallest uniform fraction (in steps of 1/64)
      whose model has at most that many MACs (tl.report's count).
    - criterion: "l1" or "l2": a filter's importance is the norm of its kernel slice, summed over
      the layers that must lose it together; the least important go.
    - Channels joined by an Add (a residual connection) are pruned together across its inputs;
      channels that reach the model's output, a Concatenate, a Reshape or a DepthwiseConv2D with
      a depth multiplier above 1 are kept.
    Before any fine-tuning, the smaller model computes what `model` computes with the removed
    channels' contributions to the next layers set to zero.
    """
    from ..models import Model
    from ..report import model_macs

    if not isinstance(model, Model):
        raise TypeError(f"prune_filters: expected a tinylearn model, got {type(model).__name__}")
    if (fraction is None) == (target_macs is None):
        raise ValueError("prune_filters: give exactly one of fraction= or target_macs=")
    if criterion not in ("l1", "l2"):
        raise ValueError(f"prune_filters: criterion must be 'l1' or 'l2', got {criterion!r}")
    if not model.built:
        model.build()
    plan = _Plan(model, criterion)
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 <= float(fraction) < 1.0:
            raise ValueError(f"prune_filters: fraction must be in [0, 1), got {fraction!r}")
        return plan.build(float(fraction))
    if isinstance(target_macs, bool) or not isinstance(target_macs, Integral) or target_macs <= 0:
        raise ValueError(f"prune_filters: target_macs must be a positive integer, got {target_macs!r}")
    full = model_macs(model)
    if full <= target_macs:
        return plan.build(0.0)
    lo, hi = 0, 63  # fractions k / 64; MACs fall as k grows
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = plan.build(mid / 64)
        if model_macs(candidate) <= target_macs:
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    if best is None:
        raise ValueError(f"prune_filters: no uniform fraction below 1 brings the model's {full:,} MACs to "
                         f"{target_macs:,} (the channels that must stay cost more)")
    return best


class _Plan:
    def __init__(self, model, criterion: str):
        self.model, self.criterion = model, criterion
        g = self.groups = _Groups()
        self.space: dict[int, int] = {}  # id(node) -> its output's channel space
        self.flat: dict[int, tuple] = {}  # id(node) of a Flatten -> (input space, spatial positions)
        order = model._order
        for t in order:
            k = id(t)
            layer = t.layer
            if layer is None:
                self.space[k] = g.new(k)
                g.freeze(k)  # the model's input
                continue
            ins = [self.space[id(p)] for p in t.inputs]
            if isinstance(layer, (L.Conv2D, L.Dense)):
                self.space[k] = g.new(k)
            elif isinstance(layer, L.DepthwiseConv2D):
                if layer.depth_multiplier == 1:
                    self.space[k] = ins[0]
                else:
                    g.freeze(ins[0])
                    self.space[k] = g.new(k)
                    g.freeze(k)
            elif isinstance(layer, _PASS):
                self.space[k] = ins[0]
            elif isinstance(layer, L.Add):
                for s in ins[1:]:
                    g.union(ins[0], s)
                self.space[k] = ins[0]
            elif isinstance(layer, L.Flatten):
                shape = self._shape(t.inputs[0])
                self.space[k] = g.new(k)
                g.freeze(k)
                if len(shape) >= 2:
                    self.flat[k] = (ins[0], int(np.prod(shape[:-1])))
                else:
                    g.freeze(ins[0])
            else:  # Concatenate, Reshape and anything unknown: their inputs stay whole
                for s in ins:
                    g.freeze(s)
                self.space[k] = g.new(k)
                g.freeze(k)
        g.freeze(self.space[id(model._output)])
        # A Dense after a Flatten reads channels through it; any other reader of a Flatten
        # (or of a frozen space) is just a reader.
        self.channels = {}
        for t in order:
            if t.layer is not None and id(t) in self.space:
                root = g.find(self.space[id(t)])
                self.channels.setdefault(root, self._shape(t)[-1])

    def _shape(self, t) -> tuple:
        if t.layer is None:
            return tuple(t.shape)
        return tuple(self.model._core.node_shape(self.model._ids[id(t)]))

    def keep(self, fraction: float) -> dict:
        """root space -> sorted channel indices kept."""
        g, scores = self.groups, {}
        for t in self.model._order:
            if isinstance(t.layer, (L.Conv2D, L.Dense)):
                root = g.find(self.space[id(t)])
                if g.is_frozen(root):
                    continue
                k = t.layer.get_weights()[0]
                k = k.reshape(-1, k.shape[-1])
                s = np.abs(k).sum(axis=0) if self.criterion == "l1" else np.sqrt((k ** 2).sum(axis=0))
                scores[root] = scores.get(root, 0) + s.astype(np.float64)
        out = {}
        for root, s in scores.items():
            n = s.size
            drop = min(int(np.floor(fraction * n)), n - 1)
            order = np.argsort(s, kind="stable")
            out[root] = np.sort(order[drop:])
        return out

    def build(self, fraction: float):
        from ..layers import Input
        from ..models import Model

        self.keep_now = self.keep(fraction)
        value, copies = {}, {}
        for t in self.model._order:
            layer = t.layer
            if layer is None:
                value[id(t)] = Input(t.shape)
                continue
            config = layer.get_config()
            out_keep = self._kept(self.space[id(t)])
            if isinstance(layer, L.Conv2D) and out_keep is not None:
                config["filters"] = len(out_keep)
            if isinstance(layer, L.Dense) and out_keep is not None:
                config["units"] = len(out_keep)
            if id(layer) not in copies:
                new = L.from_config(layer.kind, config, layer.name)
                new.trainable = layer.trainable
                copies[id(layer)] = (new, t)
            ins = [value[id(p)] for p in t.inputs]
            value[id(t)] = copies[id(layer)][0](ins if len(ins) > 1 else ins[0])
        small = Model(value[id(self.model._input)], value[id(self.model._output)], name=self.model.name)
        small.build()
        for new, t in copies.values():
            w = t.layer.get_weights()
            if not w:
                continue
            new.set_weights(self._slice(t, w))
        return small

    def _kept(self, space):
        """Kept channels of a channel space (sorted indices), or None where it stays whole."""
        return self.keep_now.get(self.groups.find(space))

    def _in_keep(self, t):
        """Kept input channels of node t's (single) input, as indices into its last axis."""
        p = t.inputs[0]
        if id(p) in self.flat:
            space, positions = self.flat[id(p)]
            kk = self._kept(space)
            if kk is None:
                return None
            ch = self.channels[self.groups.find(space)]
            return (np.arange(positions)[:, None] * ch + kk[None, :]).ravel()
        return self._kept(self.space[id(p)])

    def _slice(self, t, w):
        layer = t.layer
        out_keep = self._kept(self.space[id(t)])
        if isinstance(layer, L.BatchNormalization):
            return [a if out_keep is None else a[out_keep] for a in w]
        in_keep = self._in_keep(t)
        k = w[0]
        if isinstance(layer, L.DepthwiseConv2D):  # channel c in and out (depth multiplier 1)
            if in_keep is not None:
                k = k[:, :, in_keep, :]
            rest = [b if in_keep is None else b[in_keep] for b in w[1:]]
            return [k] + rest
        if in_keep is not None:
            k = k[in_keep, :] if isinstance(layer, L.Dense) else k[:, :, in_keep, :]
        if out_keep is not None:
            k = k[..., out_keep]
        rest = [b if out_keep is None else b[out_keep] for b in w[1:]]
        return [k] + rest
