"""The influence recursion of :mod:`.rtrl` with only the kept entries stored (SnAp-n, OSTL; Menick et al. 2021).

:func:`.rtrl.rtrl_grads` with ``storage="dense"`` keeps the influence matrix M_c ``[S, P]`` of the cell state
whole and zeroes what the pattern drops; here only the kept entries exist. A weight row of neuron j (or its bias)
acts on the state of neuron j first, and an entry of a state of neuron k is kept iff ``reach[k, j]``
(:func:`reachable`: k lies within ``order − 1`` coupling steps of j). The entries are stored per kept pair
e = (k, j) as ``M[e, f, b, x]``: field f of the state of neuron k in batch element b, and column x of the
weights into neuron j — for each plastic cell tensor its gates × presynaptic units (one column for a bias). That
is E·F·B·X numbers (:func:`kept_entries`) for E kept pairs, where the dense form holds N²·F·B·X; the readout's
parameters never act on the cell state, so their columns of M_c are not stored at all.

Per step, with the Jacobians of ``cell.step`` taken in compressed form by ``torch.func.jacfwd``:

* J^t = ∂c^t/∂c^{t−1}: neuron k's state depends on its own and on the neurons it receives from (W^rec_kk' ≠ 0).
  Neurons whose such sets never meet share one probe direction (a greedy colouring of the coupling graph), so
  the structural entries come from F·C tangents for C colours (C = N only for a dense W^rec);
* M̄^t = ∂c^t/∂θ: a weight row acts on its own neuron within a step, so one probe per gate × presynaptic unit,
  set on every row at once, gives every non-zero entry (X tangents, formed in parts of about the kept
  influence's size; each carries a whole weight matrix, so this probe's time is O(B·N²·X));
* M_new[(k, j)] = Σ_{k'} J[k, k'] M[(k', j)] over the k' that k depends on and whose pair (k', j) is kept, in
  chunks of ``chunk`` products (the temporary stays below the influence's own size), + M̄ where k = j.

The readout's rows (M_y = κ M_y + ∂y/∂c M_c + ∂y/∂θ) and the rate regulariser's Σ_t dz^t/dθ follow from the kept
entries as in the dense form, so ``rtrl_grads(..., storage="sparse")`` equals ``storage="dense"`` to rounding
(float64 ≤ 1e-12: ``tests/test_influence_family.py``). Shared (not per-task) weights only.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd, jvp, vmap

from ..cells.base import mask_self_connections
from ..errors import ConfigError
from ..numerics.linalg import is_per_task
from .eprop import RECURRENT_WEIGHTS  # the cell's tensors (their rows belong to neurons); the others: the readout's


def ravel(tensors):
    """Tensors → one flat vector and the function that splits such a vector back into their shapes."""
    shapes = [t.shape for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)

    def unravel(vector):
        out, offset = [], 0
        for shape in shapes:
            size = shape.numel()
            out.append(vector[offset : offset + size].reshape(shape))
            offset += size
        return out

    return flat, unravel


def jacobian_columns(fn, point: torch.Tensor, columns: torch.Tensor, part: int) -> torch.Tensor:
    """∂fn/∂point at ``point`` for the entries ``columns`` of it (``[outputs, len(columns)]``), by forward-mode
    tangents ``part`` at a time: ``jacfwd`` would hold one tangent of ``point``'s size per column at once, and
    every intermediate of ``fn`` as many times (for the weights of the dense recursion: P², N⁴)."""
    if columns.numel() == 0:
        return fn(point).reshape(-1, 1)[:, :0]
    parts = []
    for start in range(0, columns.numel(), part):
        chosen = columns[start : start + part]
        basis = torch.zeros(chosen.numel(), point.numel(), dtype=point.dtype, device=point.device)
        basis[torch.arange(chosen.numel(), device=point.device), chosen] = 1.0
        parts.append(vmap(lambda v: jvp(fn, (point,), (v,))[1])(basis))
    return torch.cat(parts, 0).T


def coupling(network, params) -> torch.Tensor:
    """``[k, j]`` (bool): neuron k receives from neuron j (some gate row of k has W^rec ≠ 0 there; every task's
    W^rec counts)."""
    cell, n = network.cell, network.cell.n_rec
    w_rec = params["w_rec"].detach()
    w_rec = w_rec.abs().sum(0) if is_per_task(w_rec) else w_rec.abs()
    return w_rec.reshape(cell.rows_per_neuron, n, n).sum(0) > 0


def reachable(network, params, order: int | None) -> torch.Tensor:
    """``reach[k, j]`` (bool ``[N, N]``): the state of neuron k keeps the influence of the weights into neuron j,
    i.e. k is within ``order − 1`` coupling steps of j (``order=1``: k = j only; None: every pair, exact RTRL)."""
    n = network.cell.n_rec
    step = coupling(network, params)
    device = step.device
    if order is None:
        return torch.ones(n, n, dtype=torch.bool, device=device)
    step = (step | torch.eye(n, dtype=torch.bool, device=device)).to(torch.float64)
    reach = torch.eye(n, dtype=torch.float64, device=device)
    for _ in range(order - 1):
        reach = ((step @ reach) > 0).to(torch.float64)
    return reach > 0


def _columns(network, params, names) -> list[tuple[str, int, int]]:
    """(name, gates, presynaptic width) of each plastic cell tensor, in the order of ``names``; a bias has width 1."""
    gates = network.cell.rows_per_neuron
    return [(name, gates, 1 if name == "bias" else params[name].shape[-1]) for name in names
            if name in RECURRENT_WEIGHTS]


def kept_entries(network, params, names, batch: int, order: int | None) -> int:
    """How many numbers the sparse influence of the cell state holds: E kept pairs × F fields × B × X columns."""
    fields = len(network.cell.init_state(1))
    columns = sum(g * w for _, g, w in _columns(network, params, names))
    return int(reachable(network, params, order).sum()) * fields * batch * columns


def dense_entries(network, params, names, batch: int) -> int:
    """The numbers of the dense influence of the cell state (:func:`.rtrl.rtrl_grads`, ``storage="dense"``):
    S state entries × P plastic parameters."""
    fields = len(network.cell.init_state(1))
    return fields * batch * network.cell.n_rec * sum(params[n].numel() for n in names)


def _colours(depends: torch.Tensor) -> torch.Tensor:
    """A colour per neuron k' such that no neuron depends on two of one colour (greedy, in neuron order):
    ``depends[k, k']`` is the Jacobian's structure between neurons."""
    clash = ((depends.T.to(torch.float64) @ depends.to(torch.float64)) > 0).tolist()
    colour: list[int] = []
    for k, row in enumerate(clash):
        taken = {colour[other] for other in range(k) if row[other]}
        colour.append(next(c for c in range(len(taken) + 1) if c not in taken))
    return torch.tensor(colour, dtype=torch.long, device=depends.device)


class _Pattern:
    """The kept pairs and the index lists of the recursion (fixed for a trial: W^rec does not change in it)."""

    def __init__(self, network, params, order: int | None):
        n = network.cell.n_rec
        reach = reachable(network, params, order)
        eye = torch.eye(n, dtype=torch.bool, device=reach.device)
        depends = coupling(network, params) | eye  # [k, k']: J's block between neurons k and k' may be non-zero
        self.post, self.post_of = reach.nonzero(as_tuple=True)  # pair e = (k_e, j_e), k_e's state, j_e's weights
        self.size = self.post.numel()
        pair = torch.full((n, n), -1, dtype=torch.long, device=reach.device)
        pair[self.post, self.post_of] = torch.arange(self.size, device=reach.device)
        self.own = pair.diagonal()  # the pair (j, j) of each neuron: where M̄ enters
        k, source = depends.nonzero(as_tuple=True)
        link, j = (reach[k] & reach[source]).nonzero(as_tuple=True)  # (k, k') × j with both pairs kept
        self.into, self.from_ = pair[k[link], j], pair[source[link], j]
        self.colour = _colours(depends)
        self.k, self.source_colour = k[link], self.colour[source[link]]


def sparse_influence_grads(network, params, x, target, mask, loss, regularizer, names: list[str],
                           order: int | None, paths: str, chunk: int | None = None):
    """:func:`.rtrl.rtrl_grads` with the kept influence entries stored alone (the module docstring); ``chunk``:
    the most pair products formed at once (None: about the number of kept pairs)."""
    for name in names:
        if is_per_task(params[name]) if name != "bias" else params[name].dim() > 1:
            raise ConfigError("rtrl.storage", "sparse influence needs shared weights, not per-task ones")
    cell, readout = network.cell, network.readout
    n, batch = cell.n_rec, x.shape[0]
    pattern = _Pattern(network, params, order)
    columns = _columns(network, params, names)
    cell_names = [name for name, _, _ in columns]
    readout_names = [name for name in names if name not in RECURRENT_WEIGHTS]
    fixed = {k: v for k, v in params.items() if k not in names}
    theta_cell = {name: params[name].detach() for name in cell_names}
    theta_ro, unravel_ro = ravel([params[name].detach() for name in readout_names])
    state0 = cell.init_state(batch, dtype=x.dtype, device=x.device)
    state_type, fields = type(state0), len(state0)
    c, unravel_c = ravel(list(state0))
    y0 = readout.init_state(batch, dtype=x.dtype, device=x.device)
    outputs = y0.shape[-1]
    probe_sizes = [g * w for _, g, w in columns]
    width = sum(probe_sizes)
    colours = int(pattern.colour.max()) + 1

    def cell_params(probe):  # every row of a gate moves by the probe of that gate: W[g·n + j, i] += u[g, i]
        moved = {}
        for (name, gates, cols), u in zip(columns, probe.split(probe_sizes), strict=True):
            step = u.reshape(gates, cols).repeat_interleave(n, 0)
            moved[name] = theta_cell[name] + (step[:, 0] if name == "bias" else step)
        return moved

    def transition(probe, state_probe, c_, x_t):  # c^t with the state probe spread over each colour's neurons
        spread = state_probe.reshape(fields, colours)[:, pattern.colour].unsqueeze(1).expand(fields, batch, n)
        state = state_type(*unravel_c(c_ + spread.reshape(-1)))
        new, _ = cell.step({**fixed, **theta_cell, **cell_params(probe)}, state, x_t, paths)
        return ravel(list(new))[0]

    def state_transition(state_probe, c_, x_t):
        flat = transition(zero_probe, state_probe, c_, x_t)
        return flat, flat

    def readout_transition(theta_, y_, c_):
        ro = dict(zip(readout_names, unravel_ro(theta_), strict=True))
        return readout.step({**fixed, **theta_cell, **ro}, y_.reshape(y0.shape),
                            cell.output(state_type(*unravel_c(c_)))).reshape(-1)

    def step_loss(y_, t):
        return loss.value(y_.reshape(y0.shape).unsqueeze(1), target[:, t : t + 1], mask[:, t : t + 1])

    def per_neuron(jac):  # [R, B, F·B·N] (rows R per batch element) → [F, B, N, R] of the same batch element
        rows = jac.shape[0]
        jac = jac.reshape(rows, batch, fields, batch, -1).diagonal(dim1=1, dim2=3)  # [R, F, N, B]
        return jac.permute(1, 3, 2, 0)

    m = torch.zeros(pattern.size, fields, batch, width, dtype=x.dtype, device=x.device)
    m_y = torch.zeros(n, batch * outputs, width, dtype=x.dtype, device=x.device)  # readout rows, by the weights' j
    m_y_ro = torch.zeros(batch * outputs, theta_ro.numel(), dtype=x.dtype, device=x.device)
    spike_sum = torch.zeros(pattern.size, batch, width, dtype=x.dtype, device=x.device) if regularizer else None
    zero_probe = torch.zeros(width, dtype=x.dtype, device=x.device)
    zero_state = torch.zeros(fields * colours, dtype=x.dtype, device=x.device)
    chunk = max(1, chunk or pattern.size)
    # M̄'s tangents carry whole weight matrices (rows × presynaptic units each): formed in parts of about the
    # influence's own size (16 tangents at least, a bound on the calls), so that they hold no more than a
    # constant times it (their time, X products of that size, is O(B·N²·X))
    basis = torch.eye(width, dtype=x.dtype, device=x.device)
    largest = max((network.cell.rows_per_neuron * n * w for _, _, w in columns), default=1)
    probe_chunk = max(16, pattern.size * fields * batch * width // largest)
    probe_parts = [slice(s, s + probe_chunk) for s in range(0, width, probe_chunk)]
    y = y0.reshape(-1)
    grad = torch.zeros(n, width, dtype=x.dtype, device=x.device)
    grad_ro = torch.zeros_like(theta_ro)
    value = torch.zeros((), dtype=x.dtype, device=x.device)
    spikes = []
    for t in range(x.shape[1]):
        immediate = torch.cat([vmap(lambda du, c_=c, x_t=x[:, t]: jvp(
            lambda u: transition(u, zero_state, c_, x_t), (zero_probe,), (du,))[1])(basis[part])
            for part in probe_parts] + [c.new_zeros(0, c.numel())], 0).T  # [S, X]: a tangent moves a column
        jac_c, c = jacfwd(state_transition, has_aux=True)(zero_state, c, x[:, t])
        # J's structural entries [Q, F, B, F'] and M̄ [N, F, B, X], from the compressed Jacobians
        jac_c = jac_c.reshape(fields, batch, n, fields, colours).permute(2, 4, 0, 1, 3)
        new = torch.zeros_like(m)
        for start in range(0, pattern.into.numel(), chunk):
            part = slice(start, start + chunk)
            block = jac_c[pattern.k[part], pattern.source_colour[part]]
            new.index_add_(0, pattern.into[part], torch.einsum("qfbg,qgbx->qfbx", block, m[pattern.from_[part]]))
        new[pattern.own] += immediate.reshape(fields, batch, n, width).permute(2, 0, 1, 3)
        m = new
        jac_y, jac_yc, jac_ytheta = jacfwd(readout_transition, argnums=(1, 2, 0))(theta_ro, y, c)
        through = torch.einsum("fbeo,efbx->ebox", per_neuron(jac_yc.reshape(batch, outputs, -1)
                                                             .transpose(0, 1))[:, :, pattern.post], m)
        m_y = torch.einsum("pq,jqx->jpx", jac_y, m_y).index_add_(0, pattern.post_of,
                                                                 through.reshape(pattern.size, batch * outputs, width))
        m_y_ro = jac_y @ m_y_ro + jac_ytheta
        y = readout_transition(theta_ro, y, c)
        error = jacfwd(step_loss)(y, t)
        grad = grad + torch.einsum("p,jpx->jx", error, m_y)
        grad_ro = grad_ro + error @ m_y_ro
        value = value + step_loss(y, t)
        if regularizer is not None:
            z_of_c = jacfwd(lambda c_: cell.output(state_type(*unravel_c(c_))).reshape(-1))(c)  # [B·N, S]
            own = per_neuron(z_of_c.reshape(batch, n, -1).transpose(0, 1)).diagonal(dim1=2, dim2=3)  # [F, B, N]
            spike_sum = spike_sum + torch.einsum("fbe,efbx->ebx", own[:, :, pattern.post], m)
            spikes.append(cell.output(state_type(*unravel_c(c))))
    if regularizer is not None:
        z = torch.stack(spikes, 1)
        signal = regularizer.signal(z, False).expand(z.shape[0], 1, z.shape[2])[:, 0]  # [B, N]
        grad = grad.index_add(0, pattern.post_of, torch.einsum("be,ebx->ex", signal[:, pattern.post], spike_sum))
        value = value + regularizer.loss(z, False)
    grads = {}
    for (name, gates, cols), block in zip(columns, grad.split(probe_sizes, 1), strict=True):
        rows = block.reshape(n, gates, cols).transpose(0, 1).reshape(gates * n, cols)
        grads[name] = rows[:, 0] if name == "bias" else rows
    grads.update(zip(readout_names, unravel_ro(grad_ro), strict=True))
    return {name: mask_self_connections(cell, name, grads[name]) for name in names}, value
