"""Shape helpers shared by every cell and rule: shared weights ``[rows, n]`` or per-task fast weights
``[batch, rows, n]`` act the same way, and weight updates are contracted over time in one matrix product."""

from __future__ import annotations

import torch

from . import native

# Below this fraction of nonzeros an input (spikes, spike-coded context) is multiplied event by event by the
# native kernel: nnz·M multiply-adds instead of R·K·M (measured break-even against BLAS on this project's CPU
# is near 10 %).
SPARSE_DENSITY = 0.1
SPARSE_MIN_ENTRIES = 1 << 16
SPARSE_MIN_WIDTH = 16  # below this many outputs per nonzero the event loop does not pay for its bookkeeping
DENSITY_SAMPLE_ROWS = 512


def _mostly_zeros(x: torch.Tensor) -> bool:
    """Density of ``x [..., R, K]`` estimated on evenly strided rows, read in place (a strided view of a padded
    trajectory is never copied for it; the choice affects speed, never values)."""
    rows = x[..., 0].numel()
    step = max(1, min(rows // DENSITY_SAMPLE_ROWS, x.shape[-2]))
    return torch.count_nonzero(x[..., ::step, :]) <= SPARSE_DENSITY * x[..., ::step, :].numel()


def _event_driven(sparse: torch.Tensor, dense_width: int, other: torch.Tensor) -> bool:
    """Whether a product with the mostly-zero operand ``sparse`` (and ``other``, ``dense_width`` outputs per
    nonzero) goes event by event through the native kernel rather than BLAS."""
    return (sparse.numel() >= SPARSE_MIN_ENTRIES and dense_width >= SPARSE_MIN_WIDTH and sparse.dtype == other.dtype
            and native.usable(sparse, other) and _mostly_zeros(sparse))


class _SparseInputLinear(torch.autograd.Function):
    """``x Wᵀ`` for a mostly-zero ``x [G, R, K]`` (rows contiguous, any group stride: read in place) and shared
    ``W [M, K]``; exact (zeros contribute nothing)."""

    @staticmethod
    def forward(x, w):
        return native.module().sparse_input_matmul(x, w.mT.contiguous())

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad_x = matmul_steps(grad, w) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():  # differentiated again (create_graph): stay with differentiable ops
                grad_w = (grad.mT @ x).sum(0)
            else:  # the kernel reads the (batch-strided) gradient in place
                grad_w = sparse_input_product_t(x, grad).mT
        return grad_x, grad_w


def sparse_input_product_t(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``Σ xᵀ g`` over the leading dimension for ``x [..., R, K]``, ``g [..., R, M]`` (no autograd: inside a
    backward) → ``[K, M]``; event by event where x is large and mostly zeros (spikes), reading strided views in
    place, else one BLAS product."""
    if _event_driven(x, g.shape[-1], g):
        return native.module().sparse_input_matmul_t(_groups(x), _groups(g), True)
    return x.flatten(0, -2).mT @ g.flatten(0, -2)


def _groups(x: torch.Tensor) -> torch.Tensor:
    """``[..., R, K]`` as ``[G, R, K]`` (a view where the leading dimensions allow one)."""
    return x.reshape(-1, *x.shape[-2:]) if x.dim() != 2 else x.unsqueeze(0)


def _sparse_product(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """``x @ w.mT`` event by event where x is large and mostly zeros (CPU, native kernels), else None."""
    if w.dim() != 2 or not _event_driven(x, w.shape[0], w):
        return None
    return _SparseInputLinear.apply(_groups(x), w).reshape(*x.shape[:-1], w.shape[0])


def is_per_task(w: torch.Tensor, bias: bool = False) -> bool:
    """Per-task fast weights carry a leading task (batch) dimension: ``[B, rows, n]`` (or ``[B, rows]`` for a
    bias vector)."""
    return w.dim() == (2 if bias else 3)


def linear(w: torch.Tensor, x: torch.Tensor, add: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """``add + scale·W x`` for x of shape ``[B, n]`` or ``[B, T, n]``; w of shape ``[rows, n]`` or
    ``[B, rows, n]`` (per-task). With ``add`` the product and the sum are one fused BLAS call for the per-step
    shapes (``addmm``/``baddbmm``), which is what the time loop uses."""
    if add is not None and x.dim() == 2:
        if not is_per_task(w):
            return torch.addmm(add, x, w.mT, alpha=scale)
        return torch.baddbmm(add.unsqueeze(-1), w, x.unsqueeze(-1), alpha=scale).squeeze(-1)
    sparse = _sparse_product(w, x) if x.dim() == 3 else None
    if sparse is not None:
        out = sparse
    elif not is_per_task(w):
        out = matmul_steps(x, w.mT)
    elif x.dim() == 3:
        out = x @ w.mT
    else:
        out = (w @ x.unsqueeze(-1)).squeeze(-1)
    if scale != 1.0:
        out = scale * out
    return out if add is None else add + out


class _SparsePreContraction(torch.autograd.Function):
    """``postᵀ pre`` per group for a mostly-zero ``pre [G, R, n]`` (spikes) → ``[G, rows, n]``, or its sum over
    the groups ``[rows, n]`` (``summed``: a shared weight over a batch); forward and the ``post`` gradient event
    by event, reading strided time slices in place; the ``pre`` gradient one dense product."""

    @staticmethod
    def forward(post, pre, summed):
        return native.module().sparse_input_matmul_t(pre, post, summed).mT

    @staticmethod
    def setup_context(ctx, inputs, output):
        post, pre, _ = inputs
        ctx.save_for_backward(post, pre)

    @staticmethod
    def backward(ctx, grad):
        post, pre = ctx.saved_tensors
        grad_post = grad_pre = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # differentiated again: differentiable ops only
                grad_post = pre @ grad.mT
            else:
                grad_post = native.module().sparse_input_matmul(pre, grad.mT.contiguous())
        if ctx.needs_input_grad[1]:
            grad_pre = post @ grad
        return grad_post, grad_pre, None


def _sparse_contraction(post: torch.Tensor, pre: torch.Tensor, per_task: bool) -> torch.Tensor | None:
    if not _event_driven(pre, post.shape[-1], post):
        return None
    return _SparsePreContraction.apply(post, pre, not per_task)


def contract_time(post: torch.Tensor, pre: torch.Tensor, per_task: bool) -> torch.Tensor:
    """``Σ_t post_j^t pre_i^t`` from ``[B, T, rows]`` and ``[B, T, n]`` factors.

    ``per_task`` keeps one matrix per batch element ``[B, rows, n]`` (fast weights), otherwise the sum over the
    batch is returned ``[rows, n]``. Either way it is one batched matrix product: memory O(B·T·(rows+n)).
    The narrower factor goes first (transposed): ``(preᵀ post)ᵀ`` for input weights (n = 10 vs 400 rows) is
    3-4× faster on CPU BLAS than ``postᵀ pre``, the same numbers either way.
    """
    sparse = _sparse_contraction(post, pre, per_task)
    if sparse is not None:  # spikes as the presynaptic factor: only the steps where a neuron spiked count
        return sparse
    if not per_task:
        if not _flattens_in_place(post) or not _flattens_in_place(pre):  # strided trajectory views: no copy
            return (post.mT @ pre).sum(0) if pre.shape[-1] > post.shape[-1] else (pre.mT @ post).sum(0).mT
        post, pre = post.flatten(0, 1), pre.flatten(0, 1)
    if pre.shape[-1] <= post.shape[-1]:
        return (pre.mT @ post).mT
    return post.mT @ pre


def matmul_steps(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for ``x [..., n]`` and a shared ``w [n, m]``. A batch-strided ``[B, T, n]`` view (a padded
    trajectory's steps, or the gradient flowing into one) goes through a batched product, which reads it in
    place; ``x @ w`` would first copy it whole to merge B and T."""
    if x.dim() == 3 and not _flattens_in_place(x):
        return torch.bmm(x, w.expand(x.shape[0], *w.shape))
    return x @ w


def _flattens_in_place(x: torch.Tensor) -> bool:
    """Whether ``x [B, T, n]`` merges its first two dimensions as a view (no copy)."""
    return x.shape[0] <= 1 or x.stride(0) == x.shape[1] * x.stride(1)


def outer(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Per-step outer product ``[B, rows] × [B, n] → [B, rows, n]``."""
    return post.unsqueeze(-1) * pre.unsqueeze(-2)


def no_self_mask(n: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """1 off the diagonal, 0 on it: recurrent spiking weights have no self-connections."""
    return 1.0 - torch.eye(n, dtype=dtype, device=device)
