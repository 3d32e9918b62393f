"""The meta-parameters as a tree per population, and the one flat name of each of its leaves.

In memory the meta-parameters are plain nested dicts (pytrees: ``torch.func`` transforms and autograd take
them whole)::

    {"network": {"w_in", "w_rec", "w_out"[, "b_out"]},      # the learning network's initial weights
     "error_module": {...},                                  # the signal source's own (may be empty)
     "log_inner_lr": tensor}                                 # log of the inner learning rate, if meta-learned

A learned error module's own tree is ``{"cell": {"w_in", "w_rec"}, "proj": Ψ}``, a feedback matrix's
``{"b_fb": B}``. Every component reads only its own sub-tree.

Files and user-facing names speak one flat name per leaf (checkpoints of format 1, ``weights.npz`` of an export,
``eval.reinit`` and the ``initialised`` list of an evaluation, messages): the network's weights and a feedback
matrix by their own names, a learned error module's prefixed ``em_`` (``em_w_in``, ``em_w_rec``, ``em_proj``),
``log_inner_lr`` as it is. :func:`flat` and :func:`nested` are the only translation between the two.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

NETWORK = "network"
ERROR_MODULE = "error_module"
# the inner learning rate is meta-learned as its log (it stays positive); the rate itself is ``inner_lr``
LOG_INNER_LR = "log_inner_lr"

# flat names: a learned error module's leaves carry this prefix, a feedback matrix's (FEEDBACK) does not
MODULE_PREFIX = "em_"
FEEDBACK = ("b_fb",)

Tree = dict


def leaves(tree: Tree) -> list[torch.Tensor]:
    """The tensors of ``tree`` in its order (dict insertion order; the order of :func:`flat`): what the
    optimiser, gradient clipping and the gradient all-reduce see."""
    return [value for _, value in _paths(tree)]


def tree_map(function, tree: Tree) -> Tree:
    """``tree`` with ``function`` applied to every tensor (same structure)."""
    return pytree.tree_map(function, tree)


# The flat names are the ones every checkpoint was written with (before the tree existed), so they stay: the
# two functions below are the whole mapping between a leaf's path and its flat name.
def _flat_name(path: tuple[str, ...]) -> str:
    if path[0] == ERROR_MODULE and path[-1] not in FEEDBACK:
        return MODULE_PREFIX + path[-1]
    return path[-1]


def _path(name: str) -> tuple[str, ...]:
    if name == LOG_INNER_LR:
        return (LOG_INNER_LR,)
    if name in FEEDBACK:
        return (ERROR_MODULE, name)
    if name == MODULE_PREFIX + "proj":
        return (ERROR_MODULE, "proj")
    if name.startswith(MODULE_PREFIX):
        return (ERROR_MODULE, "cell", name[len(MODULE_PREFIX):])
    return (NETWORK, name)


def _paths(tree: Tree, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def flat(tree: Tree) -> dict[str, torch.Tensor]:
    """``{flat name: tensor}`` of a meta-parameter tree, in the tree's order."""
    out = {}
    for path, value in _paths(tree):
        name = _flat_name(path)
        if name in out:
            raise ValueError(f"meta-parameters: two leaves share the flat name {name!r}")
        out[name] = value
    return out


def nested(names: dict[str, torch.Tensor]) -> Tree:
    """The tree of ``{flat name: tensor}`` (the inverse of :func:`flat`), with both populations (a source without
    parameters has an empty one)."""
    tree: Tree = {NETWORK: {}, ERROR_MODULE: {}}
    for name, value in names.items():
        *parents, leaf = _path(name)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def device(tree: Tree) -> torch.device:
    """Where the meta-parameters live (their first tensor's device)."""
    return leaves(tree)[0].device
