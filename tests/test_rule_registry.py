"""One rule registry (eprop_l2l.inner_loop.registry): every rule is registered once with what it is, every user
dispatches through it, and a new rule is one registration (the smallest example is docs/architecture.md's)."""

import pytest
import torch

from eprop_l2l.cells.rate import RateRNN
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.eprop import EpropResult, readout_grads
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.registry import RULES, Rule, UpdateRequest, get_rule, register, rule_names
from eprop_l2l.inner_loop.rules import RuleRunner, parse_rule, rule_kinds
from eprop_l2l.inner_loop.train import RuleTraining, train_with_rule
from eprop_l2l.task_families import TaskBatch, make_task_family

from .builders import make_cell, make_trial


def test_every_rule_is_registered_once_with_what_it_is():
    table = {name: (r.reads_source, r.local, r.one_shot, r.windowed, r.cell, r.influence)
             for name, r in RULES.items() if name == r.name}
    assert table == {
        "eprop": (True, True, True, False, None, False),
        "bptt": (False, False, True, False, None, False),
        "tbptt": (False, False, False, True, None, False),
        "eprop3": (False, False, False, True, None, False),
        "rflo": (True, True, False, False, RateRNN, False),
        "rtrl": (False, False, False, False, None, True),
        "snap2": (False, False, False, False, None, True),
        "ostl": (False, False, True, False, None, False),
        "superspike": (True, True, False, False, None, False),
        "decolle": (False, True, False, False, None, False),
    }
    assert rule_names(network="feedforward") == ("superspike", "decolle")
    assert RULES["eprop1"] is RULES["eprop"]  # compare's name for e-prop with a feedback matrix
    assert rule_names(one_shot=True) == ("eprop", "bptt", "ostl")
    assert rule_names(local=True) == ("eprop", "rflo", "superspike", "decolle")


def test_a_name_is_registered_once_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="'bptt' is already registered"):
        register(Rule("bptt", RULES["bptt"].update, "a second bptt"))
    with pytest.raises(ConfigError, match=r"^inner\.rule: unknown value 'sgd'"):
        get_rule("sgd", "inner.rule")


def _request(rule_name, **options):
    network, params, x, target, mask, _ = make_trial(make_cell("lif"), steps=30)
    batch = TaskBatch(x, target, mask, dt_ms=1.0)
    return UpdateRequest(network=network, params=params, batch=batch, loss=Loss("mse"), plastic=("w_in", "w_rec"),
                         **options)


def test_exact_rules_agree_through_the_registry():
    """RTRL (forward mode) and BPTT (reverse mode), both dispatched by name, give the same gradient."""
    bptt = get_rule("bptt").update(_request("bptt"))
    rtrl = get_rule("rtrl").update(_request("rtrl"))
    for name in ("w_in", "w_rec"):
        torch.testing.assert_close(rtrl.grads[name], bptt.grads[name], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(rtrl.loss, bptt.loss, rtol=1e-12, atol=0)


def test_the_influence_rules_dispatch_their_kept_pattern():
    request = _request("snap2")
    request.params["w_rec"] = torch.zeros_like(request.params["w_rec"])  # one layer: both are exact
    bptt = get_rule("bptt").update(request)
    for name in ("snap2", "ostl"):
        result = get_rule(name).update(request)
        for w in ("w_in", "w_rec"):
            torch.testing.assert_close(result.grads[w], bptt.grads[w], rtol=1e-9, atol=1e-12)
    dense = _request("snap2")  # a dense W_rec: SnAp-2 keeps everything, OSTL only the neuron-internal entries
    exact = get_rule("rtrl").update(dense).grads["w_in"]
    torch.testing.assert_close(get_rule("snap2").update(dense).grads["w_in"], exact, rtol=1e-9, atol=1e-12)
    ostl = get_rule("ostl").update(dense).grads["w_in"]
    assert ((ostl - exact).norm() / exact.norm()) > 1e-3


def test_per_task_updates_through_the_registry_equal_one_task_at_a_time():
    source = Feedback("symmetric", 7, 2)
    for name in ("eprop", "bptt"):
        together = get_rule(name).update(_request(name, source=source, per_task=True))
        full = _request(name, source=source)
        for task in range(full.batch.batch_size):
            one = get_rule(name).update(UpdateRequest(
                network=full.network, params=full.params, batch=full.batch.select(slice(task, task + 1)),
                loss=full.loss, plastic=full.plastic, source=source))
            for w in ("w_in", "w_rec"):
                torch.testing.assert_close(together.grads[w][task], one.grads[w], rtol=1e-10, atol=1e-12)


# --- the smallest new rule: the delta rule on the readout alone (docs/architecture.md) ---------------------


def readout_delta(request: UpdateRequest) -> EpropResult:
    r, batch = request, request.batch
    trajectory, y = r.network.run(r.params, batch.inputs)
    error = r.loss.error(y, r.trial_target, batch.mask)
    names = tuple(n for n in r.plastic if n in ("w_out", "b_out"))
    grads = readout_grads(r.network.readout, r.params, trajectory.outputs, error, names)
    return EpropResult(grads, r.loss.value(y, r.trial_target, batch.mask), y, trajectory, None)


@pytest.fixture
def readout_rule():
    rule = register(Rule("readout_delta", readout_delta, "the delta rule on the readout alone", local=True))
    yield rule
    del RULES["readout_delta"]


def test_a_new_rule_is_one_registration(readout_rule):
    # the readout's delta rule is its exact gradient: the registered rule equals BPTT on w_out and b_out
    request = _request("readout_delta")
    request = UpdateRequest(**{**request.__dict__, "plastic": ("w_out", "b_out")})
    new, exact = readout_rule.update(request), get_rule("bptt").update(request)
    for name in ("w_out", "b_out"):
        torch.testing.assert_close(new.grads[name], exact.grads[name], rtol=1e-10, atol=1e-12)
    # ... and every user reaches it by name: the plain training loop and compare's runner
    assert "readout_delta" in rule_kinds() and parse_rule("readout_delta").kind == "readout_delta"
    family = make_task_family("sines", n_steps=60, n_in=8, dt_ms=1.0)
    network, params, *_ = make_trial(make_cell("lif", n_in=family.n_in), n_out=family.n_out, steps=60)
    params = {k: v.float() for k, v in params.items()}
    history = train_with_rule(network, params, family, None, None, RuleTraining(rule="readout_delta", lr=1e-2,
                              n_iterations=30), torch.Generator().manual_seed(0), plastic=("w_out", "b_out"))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    runner = RuleRunner(parse_rule("readout_delta"), network, torch.Generator().manual_seed(0),
                        plastic=("w_out", "b_out"))
    grads, *_ = runner.update(params, family.sample(2, torch.Generator().manual_seed(1)), Loss("mse"))
    assert set(grads) == {"w_out", "b_out"}
    # a rule that is not one-shot is not an inner loop of meta-learning
    assert "readout_delta" not in rule_names(one_shot=True)
