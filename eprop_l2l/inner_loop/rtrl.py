"""Exact real-time recurrent learning (Williams & Zipser 1989) — the forward-mode reference.

The network state s^t (every floating field of the cell state c^t, and the readout y^t) is a vector; per step

    M^t = J^t M^{t-1} + M̄^t,     J^t = ∂s^t/∂s^{t-1} (full Jacobian, all neuron-to-neuron paths),
                                 M̄^t = ∂s^t/∂θ,       dE/dθ = Σ_t ∂E^t/∂s^t · M^t

with J and M̄ taken from ``cell.step`` and ``readout.step`` by ``torch.func.jacfwd`` (the cell's rows, then the
readout's from the cell state of the same step). Memory O(S·P) and time
O(T·S²·P) for S state entries and P parameters: small networks only — it is the ground truth that BPTT and
e-prop (its diagonal approximation, Zenke & Neftci 2021) are tested against.

The same recursion with part of M kept is the family between them (``order``, :func:`influence_pattern`):
M_c^t = K ⊙ (J_c^t M_c^{t-1} + M̄_c^t) for the cell state c, with a fixed 0/1 pattern K. A weight W_ji (or a bias
of neuron j) acts on the state of neuron j first and reaches neuron k after one more step where W^rec_kj ≠ 0; K
keeps the entries of the neurons within ``order − 1`` such coupling steps (SnAp-n, Menick et al. 2021). The
readout's rows follow from the kept ones, M_y^t = κ M_y^{t-1} + ∂y^t/∂c^t M_c^t + ∂y^t/∂θ, so the readout
stays exact given the cell's influence. ``order=1`` keeps the neuron-internal entries with the full Jacobian's
neuron-internal blocks (reset included): the temporal eligibility of OSTL (Bohnstingl et al. 2022), whose spatial
part is the exact ∂E^t/∂s^t through the readout — the forward form of the rule ``ostl``, which computes the
same gradient in reverse mode (BPTT of the cells' ``paths="internal"``). ``order=2`` is SnAp-2: exact when W^rec
has no path of two coupling steps (W^rec's pattern squared is zero). This reference (``storage="dense"``) keeps M
dense and zeroes the dropped entries; ``storage="sparse"`` (:mod:`.influence_blocks`) stores the kept entries alone,
so SnAp-n's and OSTL's memory is O(kept) rather than O(S·P), with the same gradient to rounding.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd

from ..cells.base import GRADIENT_PATHS, Params, mask_self_connections
from ..errors import require_choice, require_count
from ..numerics.linalg import is_per_task
from .eprop import DEFAULT_PLASTIC, RECURRENT_WEIGHTS
from .influence_blocks import jacobian_columns, reachable, sparse_influence_grads
from .influence_blocks import ravel as _ravel
from .losses import Loss
from .regularization import RateRegularizer

STORAGES = ("dense", "sparse")


def influence_pattern(network, params: Params, names: list[str], batch: int, order: int) -> torch.Tensor:
    """The kept entries K ``[S, P]`` (bool) of the cell state's influence matrix, in :func:`rtrl_grads`' layout:
    rows are the cell state's fields (each ``[B, n_rec]``, flattened), columns the plastic tensors of ``names``
    in order, flattened. A state entry of neuron k keeps the columns of the weights into neuron j iff k is within
    ``order − 1`` coupling steps of j (W^rec_kj ≠ 0 is one step; every task's W^rec counts); the readout's
    parameters keep every column (they never act on the cell's state: those entries stay zero anyway). The
    readout's own rows are not masked: they follow from the kept cell rows."""
    cell, n = network.cell, network.cell.n_rec
    w_rec = params["w_rec"].detach()
    reach = reachable(network, params, order)  # [k, j]
    state = cell.init_state(batch, dtype=w_rec.dtype, device=w_rec.device)
    state_neuron = torch.cat([torch.arange(f.numel(), device=w_rec.device) % n for f in state])
    columns = []
    for name in names:
        p = params[name]
        if name in RECURRENT_WEIGHTS:
            rows = p.shape[-1] if name == "bias" else p.shape[-2]
            width = 1 if name == "bias" else p.shape[-1]
            post = (torch.arange(p.numel(), device=w_rec.device) // width) % rows % n
            columns.append(reach[state_neuron][:, post])
        else:  # the readout's parameters never act on the cell's state: their entries there stay zero anyway
            columns.append(torch.ones(state_neuron.numel(), p.numel(), dtype=torch.bool, device=w_rec.device))
    return torch.cat(columns, 1)


def rtrl_grads(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               plastic: tuple[str, ...] = DEFAULT_PLASTIC, *, order: int | None = None,
               paths: str = "full", storage: str = "dense",
               chunk: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """dE/dθ for the plastic parameters by the forward recursion; ``order`` keeps part of the influence matrix
    (:func:`influence_pattern`; None: all of it, exact RTRL); ``paths`` is the cells' gradient-path convention
    of J (``"no_reset"``: the reset acts as a constant, as in e-prop). ``storage="dense"`` holds M whole and
    zeroes the dropped entries (the reference); ``"sparse"`` stores the kept entries alone
    (:mod:`.influence_blocks`, shared weights; ``chunk``: the most pair products formed at once)."""
    cell, readout = network.cell, network.readout
    require_choice("rtrl.paths", paths, GRADIENT_PATHS)
    require_choice("rtrl.storage", storage, STORAGES)
    if order is not None:
        require_count("rtrl.order", order)
    names = [n for n in plastic if n in params]
    if storage == "sparse":
        return sparse_influence_grads(network, params, x, target, mask, loss, regularizer, names, order, paths, chunk)
    fixed = {k: v for k, v in params.items() if k not in names}
    theta, unravel_theta = _ravel([params[n].detach() for n in names])
    batch = x.shape[0]
    state0 = cell.init_state(batch, dtype=x.dtype, device=x.device)
    state_type = type(state0)
    c, unravel_c = _ravel(list(state0))
    y0 = readout.init_state(batch, dtype=x.dtype, device=x.device)

    def parameters(theta_):
        return {**fixed, **dict(zip(names, unravel_theta(theta_), strict=True))}

    def spikes_of(c_):
        return cell.output(state_type(*unravel_c(c_)))

    def cell_transition(theta_, c_, x_t):
        state, _ = cell.step(parameters(theta_), state_type(*unravel_c(c_)), x_t, paths)
        return _ravel(list(state))[0]

    def readout_transition(theta_, y_, c_):  # y^t from y^{t-1} and the cell state of the same step
        return readout.step(parameters(theta_), y_.reshape(y0.shape), spikes_of(c_)).reshape(-1)

    def step_loss(y_, t):
        return loss.value(y_.reshape(y0.shape).unsqueeze(1), target[:, t : t + 1], mask[:, t : t + 1])

    # M of the cell state and of the readout: the pattern applies to the cell's rows, and the readout's rows
    # follow from the kept ones (∂y^t/∂c^t M_c^t), so the readout is exact given the cell's influence
    cell_sensitivity = torch.zeros(c.numel(), theta.numel(), dtype=x.dtype, device=x.device)
    readout_sensitivity = torch.zeros(y0.numel(), theta.numel(), dtype=x.dtype, device=x.device)
    kept = None if order is None else influence_pattern(network, params, names, batch, order).to(x.dtype)
    y = y0.reshape(-1)
    grad = torch.zeros_like(theta)
    value = torch.zeros((), dtype=x.dtype, device=x.device)
    spike_sensitivity = 0.0  # Σ_t dz^t/dθ, for the rate regulariser (a function of the trial mean)
    spikes = []
    # ∂/∂θ only where θ acts (the cell's tensors on the cell, the readout's on the readout), S tangents at a time:
    # the memory of M itself
    offsets = torch.tensor([0, *(params[n].numel() for n in names)], device=x.device).cumsum(0).tolist()
    ranges = [torch.arange(a, b, device=x.device) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    on_cell = torch.cat([r for n, r in zip(names, ranges, strict=True) if n in RECURRENT_WEIGHTS] + [ranges[0][:0]])
    on_readout = torch.cat([r for n, r in zip(names, ranges, strict=True) if n not in RECURRENT_WEIGHTS]
                           + [ranges[0][:0]])
    part = c.numel()
    for t in range(x.shape[1]):
        x_t = x[:, t]
        jac_c = jacfwd(cell_transition, argnums=1)(theta, c, x_t)
        cell_sensitivity = jac_c @ cell_sensitivity
        cell_sensitivity[:, on_cell] += jacobian_columns(lambda th, c_=c, x_t=x_t: cell_transition(th, c_, x_t),
                                                         theta, on_cell, part)
        if kept is not None:
            cell_sensitivity = cell_sensitivity * kept
        c = cell_transition(theta, c, x_t)
        jac_y, jac_yc = jacfwd(readout_transition, argnums=(1, 2))(theta, y, c)
        readout_sensitivity = jac_y @ readout_sensitivity + jac_yc @ cell_sensitivity
        readout_sensitivity[:, on_readout] += jacobian_columns(
            lambda th, y_=y, c_=c: readout_transition(th, y_, c_), theta, on_readout, part)
        y = readout_transition(theta, y, c)
        grad = grad + jacfwd(step_loss)(y, t) @ readout_sensitivity
        value = value + step_loss(y, t)
        if regularizer is not None:
            z_of_c = jacfwd(lambda c_: spikes_of(c_).reshape(-1))(c)  # [B·N, S_cell]
            spike_sensitivity = spike_sensitivity + z_of_c @ cell_sensitivity
            spikes.append(spikes_of(c))
    if regularizer is not None:
        z = torch.stack(spikes, 1)
        per_task = is_per_task(params["w_rec"])
        signal = regularizer.signal(z, per_task).expand(z.shape[0], 1, z.shape[2])[:, 0]  # [B, N]
        grad = grad + signal.reshape(-1) @ spike_sensitivity
        value = value + regularizer.loss(z, per_task)
    grads = dict(zip(names, unravel_theta(grad), strict=True))
    return {n: mask_self_connections(cell, n, g) for n, g in grads.items()}, value
