"""The spike function: Heaviside forward, pseudo-derivative in reverse and forward mode, under torch.func."""

import torch
from torch.func import grad, jvp, vmap

from eprop_l2l.cells.spike import pseudo_derivative, spike


def test_forward_is_heaviside():
    v = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 2.0])
    assert torch.equal(spike(v), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


def test_triangle_pseudo_derivative_values():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0], dtype=torch.float64)
    expected = 0.3 * torch.tensor([0.0, 0.5, 1.0, 0.75, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(pseudo_derivative(v, 0.3), expected, atol=0, rtol=1e-15)


def test_backward_forward_mode_vmap_agree():
    v = torch.linspace(-1.5, 1.5, 31, dtype=torch.float64)
    for shape in ("triangle", "fast_sigmoid"):
        expected = pseudo_derivative(v, 0.3, shape)
        reverse = vmap(grad(lambda u, s=shape: spike(u, 0.3, s)))(v)
        _, forward = jvp(lambda u, s=shape: spike(u, 0.3, s), (v,), (torch.ones_like(v),))
        assert torch.allclose(reverse, expected, rtol=1e-15, atol=0)
        assert torch.allclose(forward, expected, rtol=1e-15, atol=0)


def test_second_order_gradient_flows_through_the_pseudo_derivative():
    # d/dv [ dz/dv ] of the triangle is -γ·sign(v) inside |v| < 1: the outer loop relies on it.
    v = torch.tensor([0.5, -0.5], dtype=torch.float64, requires_grad=True)
    (dz,) = torch.autograd.grad(spike(v).sum(), v, create_graph=True)
    (d2z,) = torch.autograd.grad(dz.sum(), v)
    assert torch.allclose(d2z, torch.tensor([-0.3, 0.3], dtype=torch.float64))
