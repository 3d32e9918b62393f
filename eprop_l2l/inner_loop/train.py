"""Learning a task with one of the registered rules (inner_loop.registry): many trials, one weight update each.

Each iteration draws a batch from a task family (or reuses one given ``fixed_batch``, as in pattern
generation), turns the trial into a weight-update direction with the chosen rule and applies it with Adam or
plain gradient descent. The adaptive-feedback matrix, if any, follows the readout
(``error_modules.feedback.set_source_grads``, the update compare's ``RuleRunner`` runs too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cells.base import Params
from ..error_modules.feedback import set_source_grads, trainable_source_params
from ..errors import require_choice, require_count, require_positive
from .losses import Loss
from .metrics import classification_error, normalised_mse
from .registry import RULES, UpdateRequest, rule_names
from .regularization import RateRegularizer


@dataclass(frozen=True)
class RuleTraining:
    rule: str = "eprop"
    optimizer: str = "adam"
    lr: float = 1e-3
    n_iterations: int = 500
    batch_size: int = 1

    def __post_init__(self):
        require_choice("training.rule", self.rule, rule_names(network="recurrent"))  # the loop's RecurrentNetwork
        require_choice("training.optimizer", self.optimizer, ("adam", "sgd"))
        require_positive("training.lr", self.lr)
        require_count("training.n_iterations", self.n_iterations)
        require_count("training.batch_size", self.batch_size)


def train_with_rule(network, params: Params, family, source, source_params: Params, config: RuleTraining,
                    generator: torch.Generator, regularizer: RateRegularizer | None = None,
                    plastic=("w_in", "w_rec", "w_out", "b_out"), callback=None, fixed_batch=None) -> list[dict]:
    """Train ``params`` (updated in place) and return one record per iteration: loss and the task metric
    (``nmse`` for regression, ``error`` for classification)."""
    loss = Loss(family.loss)
    leaves = {k: v.detach().clone().requires_grad_(k in plastic) for k, v in params.items()}
    learnable = {k: v for k, v in leaves.items() if k in plastic}
    fb = trainable_source_params(source, source_params)
    trained = list(learnable.values()) + [v for v in fb.values() if v.requires_grad]
    optimizer = (torch.optim.Adam(trained, lr=config.lr) if config.optimizer == "adam"
                 else torch.optim.SGD(trained, lr=config.lr))
    batch = fixed_batch
    rule = RULES[config.rule]  # RuleTraining checked the name
    history = []
    for iteration in range(config.n_iterations):
        if fixed_batch is None:
            batch = family.sample(config.batch_size, generator)
        with torch.no_grad():
            result = rule.update(UpdateRequest(network=network, params=leaves, batch=batch, loss=loss,
                                               plastic=plastic, regularizer=regularizer, source=source,
                                               source_params=fb))
        grads, value, y = result.grads, result.loss, result.outputs
        for name, tensor in learnable.items():
            tensor.grad = grads[name]
        set_source_grads(source, fb, grads)
        optimizer.step()
        metric = (normalised_mse if family.loss == "mse" else classification_error)(y, batch.targets, batch.mask)
        record = {"iteration": iteration, "loss": float(value), ("nmse" if family.loss == "mse" else "error"):
                  float(metric)}
        history.append(record)
        if callback is not None:
            callback(record)
    for k in params:
        params[k] = leaves[k].detach()
    if source_params is not None:
        source_params.update({k: v.detach() for k, v in fb.items()})
    return history
