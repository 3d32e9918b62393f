"""The native time loops (eprop_l2l/numerics/native) against the Python reference loops: values, gradients,
second-order gradients, the event-driven products, and the fallback when the build is unavailable."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import pytest
import torch

from eprop_l2l.meta.params import flat, nested
from eprop_l2l.numerics import linalg, native
from eprop_l2l.numerics.filters import anticausal_filter, causal_filter, scan
from eprop_l2l.runs.build import from_experiment

from .builders import relative_error


@pytest.fixture(autouse=True)
def built():
    if native.module() is None:
        pytest.fail("the native kernels did not build on this machine (CI builds them; see numerics/native)")


def python_scan(x, decay, reverse=False, initial=None):
    with native.disabled():
        return scan(x, decay, reverse=reverse, initial=initial)


def grads(fn, inputs, probe):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return out, torch.autograd.grad((out * probe).sum(), leaves)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["constant", "channel", "step"])
def test_scan_values_and_gradients_equal_the_python_loop(reverse, kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 5, 2, generator=g, dtype=torch.float64)
    decay = {"constant": 0.9, "channel": torch.rand(5, 2, generator=g, dtype=torch.float64),
             "step": torch.rand(3, 40, 5, 2, generator=g, dtype=torch.float64)}[kind]
    initial = None if reverse else torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    probe = torch.randn(x.shape, generator=g, dtype=torch.float64)
    inputs = [x] + ([decay] if kind == "step" else []) + ([initial] if initial is not None else [])

    def run(impl):
        def fn(x, *rest):
            d = rest[0] if kind == "step" else decay
            init = rest[-1] if initial is not None else None
            return impl(x, d, reverse, init)
        return fn

    native_out, native_grads = grads(run(lambda x, d, r, i: scan(x, d, reverse=r, initial=i)), inputs, probe)
    python_out, python_grads = grads(run(python_scan), inputs, probe)
    assert relative_error(native_out, python_out) <= 1e-14
    for a, b in zip(native_grads, python_grads, strict=True):
        assert b.norm() > 0
        assert relative_error(a, b) <= 1e-13


def test_scan_is_differentiable_twice():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    decay = torch.rand(2, 12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # the per-step decay takes the kernel only without a gradient of its own; x carries the double backward
    torch.autograd.gradgradcheck(lambda x: scan(x, decay.detach(), reverse=True) ** 2, (x,))
    torch.autograd.gradgradcheck(lambda x: causal_filter(x, 0.8) ** 2, (x,))


def test_filters_take_the_kernel_and_equal_the_toeplitz_product():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 30, 2, generator=g, dtype=torch.float64)  # narrow: Toeplitz in the Python path
    with native.disabled():
        reference = causal_filter(x, 0.7), anticausal_filter(x, 0.7)
    assert relative_error(causal_filter(x, 0.7), reference[0]) <= 1e-14
    assert relative_error(anticausal_filter(x, 0.7), reference[1]) <= 1e-14


@pytest.mark.parametrize("reverse", [False, True])
def test_native_scan_reads_a_trajectory_view_in_place(reverse):
    """A batch-strided view (a padded record without its first step) gives the values and gradient of its
    contiguous copy."""
    g = torch.Generator().manual_seed(8)
    padded = torch.randn(3, 41, 6, generator=g, dtype=torch.float64)
    probe = torch.randn(3, 40, 6, generator=g, dtype=torch.float64)
    out, (grad,) = grads(lambda p: scan(p[:, 1:], 0.9, reverse=reverse), [padded], probe)
    ref, (ref_grad,) = grads(lambda p: scan(p[:, 1:].contiguous(), 0.9, reverse=reverse), [padded], probe)
    assert relative_error(out, ref) <= 1e-15 and relative_error(grad, ref_grad) <= 1e-15
    with native.disabled():
        loop, _ = grads(lambda p: scan(p[:, 1:], 0.9, reverse=reverse), [padded], probe)
    assert relative_error(out, loop) <= 1e-14


def test_scan_refuses_an_initial_value_for_a_reverse_scan():
    with pytest.raises(ValueError, match="initial"):
        scan(torch.zeros(1, 3, 2), 0.5, reverse=True, initial=torch.zeros(1, 2))


@pytest.mark.parametrize("layout", ["contiguous", "trajectory view"])
@pytest.mark.parametrize("density", [0.02, 0.5])
def test_event_driven_product_equals_the_dense_product(monkeypatch, density, layout):
    """Spike-like inputs below the density threshold take the event-by-event kernel, others BLAS; values and
    both gradients (input and weight) equal the dense product either way — also for ``x`` read as a view of a
    padded trajectory ``[B, T+1, n][:, 1:]`` (the kernel and the batched product read it in place)."""
    monkeypatch.setattr(linalg, "SPARSE_MIN_ENTRIES", 0)
    monkeypatch.setattr(linalg, "SPARSE_MIN_WIDTH", 0)
    g = torch.Generator().manual_seed(3)
    padded = (torch.rand(3, 51, 40, generator=g) < density).double()
    w = torch.randn(7, 40, generator=g, dtype=torch.float64)
    probe = torch.randn(3, 50, 7, generator=g, dtype=torch.float64)
    taken, kernels = [], native.module()

    class Spy:
        def __getattr__(self, name):
            if name == "sparse_input_matmul":
                taken.append(name)
            return getattr(kernels, name)

    def steps(padded):
        x = padded[:, 1:]
        return x if layout == "trajectory view" else x.contiguous()

    spy = Spy()
    monkeypatch.setattr(native, "module", lambda: spy)
    out, (gx, gw) = grads(lambda p, w: linalg.linear(w, steps(p)), [padded, w], probe)
    assert bool(taken) == (density < linalg.SPARSE_DENSITY)
    ref, (rx, rw) = grads(lambda p, w: p[:, 1:].contiguous() @ w.mT, [padded, w], probe)
    assert relative_error(out, ref) <= 1e-14
    assert relative_error(gx, rx) <= 1e-14 and relative_error(gw, rw) <= 1e-14


def test_event_driven_product_is_differentiable_twice(monkeypatch):
    monkeypatch.setattr(linalg, "SPARSE_MIN_ENTRIES", 0)
    monkeypatch.setattr(linalg, "SPARSE_MIN_WIDTH", 0)
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(2, 20, 30, generator=g) < 0.03).double().requires_grad_()
    w = torch.randn(5, 30, generator=g, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradgradcheck(lambda x, w: linalg.linear(w, x) ** 2, (x, w))


def test_meta_gradient_with_the_native_kernels_equals_the_python_loops(monkeypatch):
    """The whole e-prop 2 meta-iteration (spiking loops, scans, event-driven products) against the same
    iteration with every native path disabled, float64."""
    monkeypatch.setattr(linalg, "SPARSE_MIN_ENTRIES", 0)
    monkeypatch.setattr(linalg, "SPARSE_MIN_WIDTH", 0)
    learner, family, _ = from_experiment("cpu", "model.n_rec=24", "error_module.n_rec=16", "inner.fast_loop=true")
    batch = family.sample(3, torch.Generator().manual_seed(0))
    batch = dataclasses.replace(batch, **{f.name: getattr(batch, f.name).double() for f in dataclasses.fields(batch)
                                          if torch.is_tensor(getattr(batch, f.name))
                                          and getattr(batch, f.name).is_floating_point()},
                                extra={k: v.double() for k, v in batch.extra.items()})
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64))
    results = []
    for use_native in (True, False):
        leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
        if use_native:
            out = learner.forward(nested(leaves), batch)
        else:
            with native.disabled():
                out = learner.forward(nested(leaves), batch)
        grads_ = torch.autograd.grad(out["loss"], list(leaves.values()))
        results.append((out["loss"], dict(zip(leaves, grads_, strict=True))))
    (loss_n, grads_n), (loss_p, grads_p) = results
    assert relative_error(loss_n, loss_p) <= 1e-12
    for key in grads_p:
        assert grads_p[key].norm() > 0, key
        assert relative_error(grads_n[key], grads_p[key]) <= 1e-9, key


def test_a_failed_build_falls_back_with_one_warning(monkeypatch):
    def broken():
        raise RuntimeError("compiler exploded\nsecond line")

    monkeypatch.setattr(native, "_load", broken)
    native.module.cache_clear()
    try:
        monkeypatch.setenv("EPROP_L2L_NATIVE", "auto")
        with pytest.warns(UserWarning, match=r"unavailable \(compiler exploded\); using the Python loops"):
            assert native.module() is None
        native.module.cache_clear()
        monkeypatch.setenv("EPROP_L2L_NATIVE", "1")
        with pytest.raises(RuntimeError, match="EPROP_L2L_NATIVE=1"):
            native.module()
        native.module.cache_clear()
        monkeypatch.setenv("EPROP_L2L_NATIVE", "0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.module() is None and not native.usable(torch.zeros(1))
    finally:
        native.module.cache_clear()


def test_a_lock_nobody_releases_is_removed_after_waiting_and_an_old_one_at_once(tmp_path, monkeypatch, capsys):
    """torch's builder would wait for ever on a lock nobody owns: a fresh one (a copied cache's) is waited for
    at most ``patience`` seconds, one older than any build goes at once, and a released one ends the wait."""
    monkeypatch.setattr(native, "POLL_SECONDS", 0.01)
    lock = tmp_path / "lock"
    lock.touch()
    started = time.monotonic()
    native.wait_for_lock(lock, patience=0.2)
    assert 0.2 <= time.monotonic() - started < 5 and not lock.exists()
    err = capsys.readouterr().err
    assert "waiting for another process" in err and "removing a build lock nobody released" in err
    lock.touch()
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    native.wait_for_lock(lock, patience=3600)
    assert not lock.exists() and "removing a build lock" in capsys.readouterr().err
    native.wait_for_lock(lock, patience=3600)  # no lock: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("layout", ["contiguous", "trajectory view"])
@pytest.mark.parametrize("event_driven", [True, False])
@pytest.mark.parametrize("per_task", [False, True])
def test_event_driven_time_contraction_equals_the_dense_one(monkeypatch, per_task, event_driven, layout):
    """Σ_t post^t ⊗ pre^t with spikes as ``pre``: values, both gradients, and second order (dense fallback).
    ``trajectory view``: pre is z^{t-1} read from a padded trajectory ``[B, T+1, n][:, :-1]`` (rows contiguous,
    batch strided), which the kernels and the dense path read in place."""
    monkeypatch.setattr(linalg, "SPARSE_MIN_ENTRIES", 0)
    monkeypatch.setattr(linalg, "SPARSE_MIN_WIDTH", 0)
    monkeypatch.setattr(linalg, "SPARSE_DENSITY", 0.1 if event_driven else -1.0)
    g = torch.Generator().manual_seed(5)
    post = torch.randn(3, 40, 6, generator=g, dtype=torch.float64)
    padded = (torch.rand(3, 41, 9, generator=g) < 0.05).double()
    probe = torch.randn((3, 6, 9) if per_task else (6, 9), generator=g, dtype=torch.float64)

    def previous(padded):  # the leaf is the padded record, as in a trial; its view goes to contract_time
        pre = padded[:, :-1]
        return pre if layout == "trajectory view" else pre.contiguous()

    def dense(post, padded):
        out = post.mT @ padded[:, :-1]
        return out if per_task else out.sum(0)

    def contracted(post, padded):
        pre = previous(padded)
        assert pre.is_contiguous() == (layout == "contiguous")
        return linalg.contract_time(post, pre, per_task)

    out, (gp, gx) = grads(contracted, [post, padded], probe)
    ref, (rp, rx) = grads(dense, [post, padded], probe)
    assert relative_error(out, ref) <= 1e-14
    assert relative_error(gp, rp) <= 1e-14 and relative_error(gx, rx) <= 1e-14
    leaves = (post.clone().requires_grad_(), padded.clone().requires_grad_())
    torch.autograd.gradgradcheck(lambda a, b: contracted(a, b) ** 2, leaves)


@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("surrogate", ["triangle", "fast_sigmoid"])
def test_native_pseudo_derivative_and_its_gradient_equal_the_torch_formula(kind, surrogate):
    """ψ of a recorded trial (strided views of the padded trajectory) and ∂ψ/∂v, ∂ψ/∂a against the torch
    formula; double backward falls back to the formula."""
    from eprop_l2l.cells.simulate import simulate

    from .builders import make_cell

    cell = make_cell(kind, surrogate=surrogate)
    g = torch.Generator().manual_seed(6)
    params = cell.init_params(g, torch.float64)
    x = torch.randn(3, 30, cell.n_in, generator=g, dtype=torch.float64)
    states = simulate(cell, params, x).states
    leaves = [f.detach().clone().requires_grad_() for f in states]
    probe = torch.randn(states.v.shape, generator=g, dtype=torch.float64)

    def psi(*fields):
        return cell.psi(params, type(states)(*fields))

    native_psi = psi(*leaves)
    with native.disabled():
        torch_psi = psi(*leaves)
    assert torch_psi.abs().sum() > 0
    assert relative_error(native_psi, torch_psi) <= 1e-14
    grads_native = torch.autograd.grad((native_psi * probe).sum(), leaves, allow_unused=True)
    grads_torch = torch.autograd.grad((torch_psi * probe).sum(), leaves, allow_unused=True)
    for a, b in zip(grads_native, grads_torch, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            assert relative_error(a, b) <= 1e-13
    torch.autograd.gradgradcheck(lambda v: cell.psi(params, states._replace(v=v)), (leaves[0],))


@pytest.mark.parametrize("built", [True, False])
def test_an_existing_build_is_imported_without_torchs_lock_and_a_missing_one_built(tmp_path, monkeypatch, built):
    """torch takes its build lock even where the binary is built (to re-check it), so a lock nobody released
    blocked every later load (seen: a CI run waited out its time limit). An existing binary is imported directly,
    after at most RECHECK_WAIT_SECONDS of waiting; only a missing one goes to torch's builder."""
    import torch.utils.cpp_extension as cpp

    monkeypatch.setattr(cpp, "_get_build_directory", lambda name, verbose: str(tmp_path))
    monkeypatch.setattr(cpp, "load", lambda **kwargs: "built")
    waits = []
    monkeypatch.setattr(native, "wait_for_lock", lambda lock, patience: waits.append((lock, patience)))
    monkeypatch.setattr(native, "import_library", lambda name, library: f"imported {library.name}")
    if built:
        def build_dir(name, verbose):  # named after the source hash: the binary goes where _load will look
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"{name}.so").touch()
            return str(tmp_path / name)
        monkeypatch.setattr(cpp, "_get_build_directory", build_dir)
        result = native._load.__wrapped__()
        assert result.startswith("imported eprop_l2l_kernels_") and result.endswith(".so")
        assert [patience for _, patience in waits] == [native.RECHECK_WAIT_SECONDS]
    else:
        assert native._load.__wrapped__() == "built"
        assert waits == [(tmp_path / "lock", native.STALE_LOCK_SECONDS)]
