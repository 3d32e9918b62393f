"""The independent straightforward port (benchmarks/straightforward_port.py) as an oracle of MetaLearner: the
same meta-loss and meta-gradients in float64 at small sizes of the cpu and paper presets, with and without the
hand-written spiking backward; a port with one wrong constant is caught."""

import ast
from pathlib import Path

import pytest
import torch

from eprop_l2l.meta.params import flat, nested
from eprop_l2l.runs.build import from_experiment
from tests.load_file import load_file

from .builders import relative_error

PORT_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "straightforward_port.py"
SMALL = ("model.n_rec=20", "error_module.n_rec=12", "task.n_steps=60", "task.n_pop_per_dim=8")
FORBIDDEN = ("eprop_l2l.cells", "eprop_l2l.inner_loop", "eprop_l2l.meta", "eprop_l2l.error_modules")


def load_port():
    return load_file("straightforward_port", PORT_FILE)


PORT = load_port()


def setup(preset: str, *overrides: str, tasks: int = 3):
    learner, family, _ = from_experiment(preset, *SMALL, *overrides)
    batch = family.sample(tasks, torch.Generator().manual_seed(0), torch.float64)
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64))  # the port's names
    port = PORT.StraightforwardPort.from_learner(learner, meta, lr=1e-3, dtype=torch.float64)
    tensors = (batch.inputs, batch.context, batch.targets, batch.extra["hand"], batch.mask)
    return learner, batch, meta, port, tensors


def ours(learner, meta, batch):
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(nested(leaves), batch)
    out["loss"].backward()
    learner.constrain_gradients(nested(leaves))
    return out, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("preset", ["cpu", "paper"])
@pytest.mark.parametrize("fast_loop", [True, False])
def test_port_equals_meta_learner(preset, fast_loop):
    learner, batch, meta, port, tensors = setup(preset, f"inner.fast_loop={fast_loop}")
    out, grads = ours(learner, meta, batch)
    demo = out["demos"][0]
    assert demo.trajectory.outputs.sum() > 0 and demo.source_trajectory.outputs.sum() > 0
    assert out["test_trajectory"].outputs.sum() > 0
    loss = port.loss(*tensors)
    assert relative_error(loss, out["loss"]) <= 1e-10
    loss.backward()
    assert set(port.params) == set(grads)
    for key, grad in grads.items():
        assert grad.norm() > 0, key
        assert relative_error(port.params[key].grad, grad) <= 1e-8, key
    for key in ("w_rec", "em_w_rec"):
        assert torch.count_nonzero(port.params[key].grad.diagonal()) == 0


def test_port_with_a_fixed_inner_learning_rate():
    learner, batch, meta, port, tensors = setup("cpu", "inner.learn_lr=false")
    assert "log_inner_lr" not in port.params
    out, _ = ours(learner, meta, batch)
    assert relative_error(port.loss(*tensors), out["loss"]) <= 1e-10


@pytest.mark.parametrize("field,factor", [("reset", 0.9), ("n_ref", None)])
def test_a_perturbed_port_is_detected(field, factor):
    learner, batch, meta, port, tensors = setup("cpu")
    reference = learner.forward(nested(meta), batch)["loss"]
    assert relative_error(port.loss(*tensors), reference) <= 1e-10
    value = getattr(port.net, field)
    port.net = port.net._replace(**{field: value * factor if factor else value - 1})
    assert relative_error(port.loss(*tensors), reference) > 1e-6


@pytest.mark.parametrize("override", ["model.cell=alif", "error_module.use_inputs=false",
                                      "inner.plastic=[w_in,w_rec,w_out]", "inner.n_updates=2"])
def test_unsupported_options_are_refused(override):
    learner, _, _ = from_experiment("cpu", *SMALL, override)
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64))
    with pytest.raises(ValueError):
        PORT.StraightforwardPort.from_learner(learner, meta, lr=1e-3)


def test_meta_iteration_takes_an_adam_step():
    _, _, meta, port, tensors = setup("cpu")
    before = {k: v.detach().clone() for k, v in port.params.items()}
    loss = port.meta_iteration(*tensors)
    assert loss == pytest.approx(port.loss(*tensors).item(), rel=0.1)
    for key, value in port.params.items():
        assert not torch.equal(value.detach(), before[key]), key
    assert torch.count_nonzero(port.params["w_rec"].detach().diagonal()) == 0


def test_the_port_does_not_import_the_implementation_it_checks():
    imported = set()
    for node in ast.walk(ast.parse(PORT_FILE.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not [name for name in imported if name.startswith(FORBIDDEN)], imported
