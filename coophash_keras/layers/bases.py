"""The shared base factory: every network builds its base f0 here, from keyword arguments that
models/networks.py `base_network_kwargs(config)` makes from a CoopHashConfig. A `backbone` entry
(other than 'none') gives a BackboneBaseNetwork, anything else the ConvBaseNetwork.

A network's get_config stores `base_kwargs_of(its base)`: what rebuilds the base exactly as it is
(for a backbone its architecture, never where its pretrained weights came from). A model restored
from a .keras file builds its base from that saved description (`restoring_base`), so loading,
exporting and serving never download weights: they come from the file."""

import contextlib
import contextvars

from coophash_keras.layers.backbone import BackboneBaseNetwork
from coophash_keras.layers.base_network import ConvBaseNetwork

_RESTORED_BASE = contextvars.ContextVar("coophash_restored_base", default=None)
_LAYER_KEYS = ("name", "trainable", "dtype", "autocast", "activity_regularizer")


def uses_backbone(base_kwargs) -> bool:
    return base_kwargs.get("backbone", "none") not in (None, "none")


def make_base_network(base_kwargs, name="base"):
    """The base f0 for `base_kwargs` (or, inside `restoring_base`, for the saved description)."""
    kwargs = dict(_RESTORED_BASE.get() or base_kwargs)
    if uses_backbone(kwargs):
        return BackboneBaseNetwork(**kwargs, name=name)
    kwargs.pop("backbone", None)
    return ConvBaseNetwork(**kwargs, name=name)


def base_kwargs_of(base) -> dict:
    """Keyword arguments that rebuild `base` as it is (its get_config without the Layer's own keys)."""
    return {k: v for k, v in base.get_config().items() if k not in _LAYER_KEYS}


@contextlib.contextmanager
def restoring_base(saved_base_kwargs):
    """Bases made inside this block follow `saved_base_kwargs` (a saved network's description);
    None leaves them to the caller's arguments (files written before the backbone existed)."""
    token = _RESTORED_BASE.set(dict(saved_base_kwargs) if saved_base_kwargs else None)
    try:
        yield
    finally:
        _RESTORED_BASE.reset(token)
