"""Shared builders for small, fully seeded networks and trials (float64 unless a test says otherwise)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from eprop_l2l.cells.alif import ALIF
from eprop_l2l.cells.cuba_lif import CubaLIF
from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout

# the command-line options that keep a test's run silent and offline
QUIET = ("wandb.mode=disabled", "run.progress=false")


def train_tiny_run(run_dir: Path) -> Path:
    """A finished two-iteration run of the ``tiny`` preset (with its end-of-training evaluation) in ``run_dir``."""
    from eprop_l2l.cli import main

    assert main(["train", "experiment=tiny", "optim.n_iterations=2", "eval.n_tasks=2", "eval.batch_size=2",
                 f"run.dir={run_dir}", *QUIET]) == 0
    return run_dir


def digest(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too) with its content's hash: what "nothing changed" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make_cell(kind: str, n_in: int = 4, n_rec: int = 7, **overrides):
    """Small LIF / ALIF / current-based LIF with a low threshold and short refractoriness, so that spikes,
    refractory steps and non-zero pseudo-derivatives all occur within a few dozen steps."""
    if kind == "lif":
        return LIF(n_in=n_in, n_rec=n_rec, v_th=0.3, n_ref=2, **{"dt_ms": 1.0, **overrides})
    if kind == "alif":
        kw = dict(v_th=0.3, n_ref=2, tau_a=40.0, beta=0.5, n_adaptive=n_rec - 2, dt_ms=1.0)
        kw.update(overrides)
        return ALIF(n_in=n_in, n_rec=n_rec, **kw)
    if kind == "cuba_lif":  # the synaptic current integrates the input: a lower threshold still spikes early
        return CubaLIF(n_in=n_in, n_rec=n_rec, v_th=0.3, n_ref=2, **{"tau_syn": 4.0, "dt_ms": 1.0, **overrides})
    raise ValueError(kind)


def make_trial(cell, n_out=2, batch=3, steps=40, seed=0, dtype=torch.float64, per_task=False, input_gain=0.5,
               rec_gain=1.0, readout_scaling="new"):
    """A network, its parameters (optionally distinct per-task fast weights) and one random regression trial.
    ``readout_scaling`` is the readout's ``input_scaling`` ("old": y = κy + (1−κ)·W^out z + b)."""
    g = torch.Generator().manual_seed(seed)
    network = RecurrentNetwork(cell, LeakyReadout(cell.n_rec, n_out, input_scaling=readout_scaling, dt_ms=1.0))
    params = network.init_params(g, dtype)
    params["w_in"] = params["w_in"] * input_gain
    params["w_rec"] = params["w_rec"] * rec_gain
    params["b_out"] = 0.1 * torch.randn(n_out, generator=g, dtype=dtype)
    if per_task:
        params = {k: v.expand(batch, *v.shape) + 0.1 * torch.randn(batch, *v.shape, generator=g, dtype=dtype)
                  for k, v in params.items()}
        eye = torch.eye(cell.n_rec, dtype=dtype)
        params["w_rec"] = params["w_rec"] * (1 - eye)
    x = (torch.rand(batch, steps, cell.n_in, generator=g) < 0.3).to(dtype)
    target = torch.randn(batch, steps, n_out, generator=g, dtype=dtype)
    mask = (torch.rand(batch, steps, generator=g) < 0.8).to(dtype)
    return network, params, x, target, mask, g
