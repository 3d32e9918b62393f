"""e-prop 3 (Bellec et al. 2019, arXiv:1901.09049, "e-prop 3"): eligibility traces carry credit forward in
time, learning signals computed by truncated BPTT carry it backward within a window of ``k`` steps, and a
synthetic gradient stands for everything beyond the window.

What is implemented (docs/eprop3.md has the derivation and the choices):

1. The factorisation of Bellec et al. (2020, eq. 1) is exact: ``dE/dW_ji = Σ_t L_j^t e_ji^t`` with ``e`` the
   e-prop eligibility trace (the sensitivity of the neuron's output to its own afferent weights through the
   neuron's own dynamics — ``paths="local"``) and ``L_j^t`` the *ideal* learning signal: ∂E/∂z_j^t through the
   paths the trace leaves out (the readout, the regulariser, and the spike's effect on the next step through
   other neurons and the own reset).
2. e-prop 3 computes ``L^t`` for the steps of window ``[a, b)`` by BPTT through the window with every path
   (:func:`eprop_l2l.inner_loop.tbptt.run_windows` with ``split=True``), with the gradient of the future
   ``c^b ≈ ∂E_{≥b}/∂S^b`` entering as the gradient with respect to the boundary state ``S^b = (s^b, y^b)``.
   ``c^b`` is the prediction of a synthetic-gradient module
   (:class:`eprop_l2l.error_modules.synthetic_gradient.SyntheticGradient`), trained online against the
   bootstrapped target ∂J_{m+1}/∂S^b of the next window (Jaderberg et al. 2017).
3. The weight update is ``Σ_t L^t e^t`` over the whole trial: the traces run on across window boundaries,
   so the influence of a weight *before* a window on the errors inside it is credited through ``e`` — which
   truncated BPTT with synthetic gradients (:func:`~eprop_l2l.inner_loop.tbptt.tbptt_grads`) cannot do when
   its synthetic gradient is poor. The sum is evaluated with the fused adjoint of the cell
   (:func:`eprop_l2l.inner_loop.eprop.recurrent_grads` with κ = 0: ``L`` already contains the readout
   filter); the readout weights get the window's BPTT gradient (the exact delta rule when k ≥ T).

Properties (tests/test_eprop3.py, float64, ≤ 1e-10): k ≥ T gives full BPTT; the true ``c^b``
(:func:`~eprop_l2l.inner_loop.tbptt.true_boundary_grads`) gives full BPTT for any k; with ``c^b = 0`` the
signals are truncated to the window and e-prop 3 becomes e-prop with window-exact learning signals.
"""

from __future__ import annotations

from ..cells.base import Params
from .eprop import DEFAULT_PLASTIC, RECURRENT_WEIGHTS, recurrent_grads
from .losses import Loss
from .regularization import RateRegularizer
from .tbptt import Boundary, TruncatedResult, run_windows


def eprop3_grads(network, params: Params, x, target, mask, loss: Loss, k: int, boundary: Boundary | None = None,
                 regularizer: RateRegularizer | None = None,
                 plastic: tuple[str, ...] = DEFAULT_PLASTIC) -> TruncatedResult:
    """e-prop 3's weight-update direction (same sign as a gradient) for ``plastic``; ``boundary(b, S^b)``
    supplies c^b (a synthetic gradient, the exact one, or ``None`` for zero). The result also carries the
    learning signals and what the synthetic gradient trains on (boundary states and bootstrapped targets)."""
    result = run_windows(network, params, x, target, mask, loss, k, boundary, regularizer, plastic, split=True)
    names = tuple(n for n in plastic if n in RECURRENT_WEIGHTS and n in params)
    rec = recurrent_grads(network.cell, {n: v.detach() for n, v in params.items()}, result.trajectory, x,
                          result.signals, 0.0, None, names)
    return result._replace(grads={**rec, **result.grads})
