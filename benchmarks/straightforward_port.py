"""A straightforward PyTorch port of the authors' e-prop 2 recipe (Bellec et al. 2019, ``tutorial_eprop2.py``):
one meta-iteration = demonstration trial → e-prop update driven by the error module → test trial → meta-loss →
backward → Adam step, written the way a performance-minded PyTorch user would port it — a Python loop over time
steps, autograd through everything, one custom autograd spike function, per-task fast weights ``[B, N, N]``.

It is an independent baseline: it imports nothing from ``eprop_l2l`` (``from_learner`` only reads attributes
of the objects it is given; the timing harness under ``__main__`` uses ``from_experiment`` to make tensors), and
``tests/test_port_oracle.py`` holds it equal to ``MetaLearner.forward(meta, batch)["loss"]`` and its gradients.

Equations (one step of ``dt_ms``; α = e^{−δt/τ_m}, κ = e^{−δt/τ_out}):

    r^t = clip(r^{t−1} + n_ref·z^{t−1} − 1, 0, n_ref)                     refractory counter (spiking blocked if > 0)
    v^t = α v^{t−1} + W^in x^t + W^rec z^{t−1} − v_th z^{t−1}              (no self-connections)
    z^t = H((v^t − v_th)/v_th),  ψ^t = (γ/v_th)·max(0, 1 − |v^t − v_th|/v_th)     (both 0 while refractory)
    y^t = κ y^{t−1} + W^out z^t                                             leaky readout, no bias
    error module: LIF on [context, z, x] → ζ;  L^t = Ψ F_decay(ζ)^t
    ΔW^in = Σ_t (L ψ)^t x̄^{tᵀ},  ΔW^rec = Σ_t (L ψ)^t z̄^{t−1ᵀ} (diagonal 0),  x̄ = F_α(x), z̄ = F_α(z)
    fast weights W − η ΔW;  meta-loss = 0.5·(0.1·MSE_motor + MSE_cart) on the test trial
        + (c/2) Σ_j (f̄_j − f*)² for the learner (demo + test spikes) and the error module (demo + test spikes)

    python benchmarks/straightforward_port.py --preset cpu --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import NamedTuple

import torch

KEYS = ("w_in", "w_rec", "w_out", "em_w_in", "em_w_rec", "em_proj")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, triangle pseudo-derivative γ·max(0, 1 − |u|) backward (u = (v − v_th)/v_th)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, gamma: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.gamma = gamma
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad * ctx.gamma * torch.relu(1.0 - u.abs()), None


class LIFConstants(NamedTuple):
    alpha: float  # membrane decay per step
    v_th: float  # threshold
    reset: float  # subtracted from v one step after a spike (v_th)
    n_ref: int  # refractory steps
    gamma: float  # pseudo-derivative dampening


def exp_filter(x: torch.Tensor, decay: float) -> torch.Tensor:
    """F(x)^t = decay·F(x)^{t−1} + x^t along dim 1 (the authors' ``exp_convolve``)."""
    acc, out = torch.zeros_like(x[:, 0]), []
    for x_t in x.unbind(1):
        acc = decay * acc + x_t
        out.append(acc)
    return torch.stack(out, 1)


def lif(currents: torch.Tensor, w_rec: torch.Tensor, c: LIFConstants, with_psi: bool = False):
    """Spikes ``[B, T, N]`` of LIF neurons driven by ``currents [B, T, N]`` (and ψ if ``with_psi``); ``w_rec`` is
    shared ``[N, N]`` or per task ``[B, N, N]``."""
    v = currents.new_zeros(currents.shape[0], currents.shape[2])
    z, ref = torch.zeros_like(v), torch.zeros_like(v)
    w_t = w_rec.transpose(-1, -2)
    per_task = w_rec.dim() == 3
    vs, zs, blocked = [], [], []
    for i_t in currents.unbind(1):
        ref = (ref + c.n_ref * z.detach() - 1.0).clamp(0.0, float(c.n_ref))
        base = c.alpha * v + i_t - c.reset * z
        if per_task:
            v = torch.baddbmm(base.unsqueeze(1), z.unsqueeze(1), w_t).squeeze(1)
        else:
            v = torch.addmm(base, z, w_t)
        refractory = ref > 0
        z = SpikeFunction.apply((v - c.v_th) / c.v_th, c.gamma).masked_fill(refractory, 0.0)
        zs.append(z)
        if with_psi:
            vs.append(v)
            blocked.append(refractory)
    z = torch.stack(zs, 1)
    if not with_psi:
        return z
    v, blocked = torch.stack(vs, 1), torch.stack(blocked, 1)
    psi = (c.gamma / c.v_th) * torch.relu(1.0 - ((v - c.v_th) / c.v_th).abs())
    return z, psi.masked_fill(blocked, 0.0)


class StraightforwardPort:
    def __init__(self, *, n_in: int, n_rec: int, n_em: int, n_context: int, tau_m_ms: float, v_th: float,
                 n_ref: int, gamma: float, tau_out_ms: float, em_tau_m_ms: float, em_v_th: float, em_n_ref: int,
                 em_gamma: float, signal_tau_ms: float, inner_lr: float, reg_coefficient: float,
                 reg_target_hz: float, em_reg_coefficient: float, em_reg_target_hz: float, dt_ms: float, lr: float,
                 params: dict[str, torch.Tensor], n_out: int = 2, motor_weight: float = 0.1,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        shapes = {"w_in": (n_rec, n_in), "w_rec": (n_rec, n_rec), "w_out": (n_out, n_rec),
                  "em_w_in": (n_em, n_context + n_rec + n_in), "em_w_rec": (n_em, n_em), "em_proj": (n_rec, n_em),
                  "log_inner_lr": ()}
        unknown = sorted(set(params) - set(shapes))
        if unknown:
            raise ValueError(f"unsupported meta-parameters {unknown} (e.g. b_out: the port has no readout bias)")
        for key, shape in shapes.items():
            if key in params and tuple(params[key].shape) != shape:
                raise ValueError(f"params[{key!r}]: expected shape {shape}, got {tuple(params[key].shape)}")
            if key not in params and key != "log_inner_lr":
                raise ValueError(f"params[{key!r}] missing")
        for key in ("w_rec", "em_w_rec"):
            if params[key].diagonal().abs().max() > 0:
                raise ValueError(f"params[{key!r}] has self-connections (non-zero diagonal)")
        if n_out != 2:
            raise ValueError(f"the two-joint arm has 2 outputs, got n_out={n_out}")
        self.sizes = (n_in, n_rec, n_context)
        self.net = LIFConstants(math.exp(-dt_ms / tau_m_ms), v_th, v_th, n_ref, gamma)
        self.em = LIFConstants(math.exp(-dt_ms / em_tau_m_ms), em_v_th, em_v_th, em_n_ref, em_gamma)
        self.kappa = math.exp(-dt_ms / tau_out_ms)
        self.signal_decay = math.exp(-dt_ms / signal_tau_ms)
        self.inner_lr, self.dt_s, self.motor_weight = inner_lr, dt_ms / 1000.0, motor_weight
        self.reg = (reg_coefficient, reg_target_hz * dt_ms / 1000.0)
        self.em_reg = (em_reg_coefficient, em_reg_target_hz * dt_ms / 1000.0)
        self.dtype, self.device = dtype, torch.device(device)
        self.params = {k: v.detach().to(device=self.device, dtype=dtype).clone().requires_grad_()
                       for k, v in params.items()}
        self.no_self = 1.0 - torch.eye(n_rec, dtype=dtype, device=self.device)
        self.em_no_self = 1.0 - torch.eye(n_em, dtype=dtype, device=self.device)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr)

    @classmethod
    def from_learner(cls, learner, meta: dict[str, torch.Tensor], lr: float, dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu") -> StraightforwardPort:
        """The port of a ``MetaLearner`` (hyper-parameters read off its config objects) at ``meta``."""
        cell, readout, em = learner.network.cell, learner.network.readout, learner.error_module
        em_cell = getattr(em, "cell", None)
        requirements = {
            "learning network: LIF": type(cell).__name__ == "LIF",
            "error module: learned, LIF": type(em).__name__ == "LearnedErrorModule" and type(em_cell).__name__ == "LIF",
            "error module sees context, spikes and inputs": em_cell is not None and em.use_context and em.use_spikes
            and em.use_inputs,
            "input_scaling 'new'": em_cell is not None and {cell.input_scaling, em_cell.input_scaling,
                                                            readout.input_scaling} == {"new"},
            "triangle surrogate": em_cell is not None and {cell.surrogate, em_cell.surrogate} == {"triangle"},
            "no readout bias": not readout.bias,
            "one float e-prop update of w_in, w_rec, kappa 0": learner.inner_rule == "eprop"
            and learner.n_inner_updates == 1 and learner.precision == "float"
            and sorted(learner.plastic) == ["w_in", "w_rec"] and learner.kappa == 0.0,
            "outer loss: the arm's": getattr(learner.outer_loss, "__qualname__", None) in ("arm_outer_loss",
                                                                                           "ArmTrials.outer_loss"),
            "task mean over the local batch": learner.task_mean is None,
            "log_inner_lr in meta iff learn_inner_lr": learner.learn_inner_lr == ("log_inner_lr" in meta),
        }
        failed = [name for name, ok in requirements.items() if not ok]
        if failed:
            raise ValueError(f"the port does not support this learner: needs {'; '.join(failed)}")
        steps = {cell.dt_ms, readout.dt_ms, em.dt_ms, em_cell.dt_ms, learner.network_rate.dt_ms,
                 learner.module_rate.dt_ms}
        if max(steps) - min(steps) > 1e-9 * max(steps):
            raise ValueError(f"the parts use different time steps {sorted(steps)}")
        return cls(n_in=cell.n_in, n_rec=cell.n_rec, n_em=em_cell.n_rec, n_context=em.n_context,
                   tau_m_ms=cell.tau_m, v_th=cell.v_th, n_ref=cell.n_ref, gamma=cell.gamma_pd,
                   tau_out_ms=readout.tau_out, em_tau_m_ms=em_cell.tau_m, em_v_th=em_cell.v_th,
                   em_n_ref=em_cell.n_ref, em_gamma=em_cell.gamma_pd, signal_tau_ms=em.signal_tau,
                   inner_lr=learner.inner_lr, reg_coefficient=learner.network_rate.coefficient,
                   reg_target_hz=learner.network_rate.target_hz, em_reg_coefficient=learner.module_rate.coefficient,
                   em_reg_target_hz=learner.module_rate.target_hz, dt_ms=cell.dt_ms, lr=lr, params=meta,
                   n_out=readout.n_out, dtype=dtype, device=device)

    def loss(self, inputs, context, targets, hand, mask=None) -> torch.Tensor:
        """Meta-loss of one batch of tasks ``[B, T, ·]``. ``mask`` is not used: the arm loss counts every step
        and the learned error module does not see the output error (as in MetaLearner)."""
        p, (n_in, n_rec, n_context) = self.params, self.sizes
        x, context, targets, hand = (t.to(self.device, self.dtype) for t in (inputs, context, targets, hand))
        steps = x.shape[1]
        w_rec = p["w_rec"] * self.no_self  # self-connections are not parameters: their gradient is 0
        em_w_rec = p["em_w_rec"] * self.em_no_self
        em_w_context, em_w_z, em_w_x = p["em_w_in"].split([n_context, n_rec, n_in], 1)
        em_task = context @ em_w_context.T + x @ em_w_x.T  # the error module's drive that both trials share

        # demonstration trial with the initial weights, the error module's learning signals, e-prop update
        z_demo, psi = lif(x @ p["w_in"].T, w_rec, self.net, with_psi=True)
        zeta_demo = lif(em_task + z_demo @ em_w_z.T, em_w_rec, self.em)
        signals = exp_filter(zeta_demo, self.signal_decay) @ p["em_proj"].T
        post = signals * psi
        d_in = torch.einsum("btj,bti->bji", post, exp_filter(x, self.net.alpha))
        z_bar = exp_filter(z_demo, self.net.alpha)  # z̄^{t-1} pairs with step t; z̄^{-1} = 0
        d_rec = torch.einsum("btj,bti->bji", post[:, 1:], z_bar[:, :-1]) * self.no_self
        eta = p["log_inner_lr"].exp() if "log_inner_lr" in p else self.inner_lr
        w_in_fast, w_rec_fast = p["w_in"] - eta * d_in, w_rec - eta * d_rec

        # test trial with the per-task fast weights; the error module runs again for its rate regulariser
        z_test = lif(torch.bmm(x, w_in_fast.transpose(1, 2)), w_rec_fast, self.net)
        y = exp_filter(z_test @ p["w_out"].T, self.kappa)
        zeta_test = lif(em_task + z_test @ em_w_z.T, em_w_rec, self.em)

        phi = torch.tensor([0.0, math.pi / 2], dtype=y.dtype, device=y.device) + self.dt_s * y.cumsum(1)
        elbow = phi[..., 0] + phi[..., 1]
        produced = torch.stack([0.5 * phi[..., 0].cos() + 0.5 * elbow.cos(),
                                0.5 * phi[..., 0].sin() + 0.5 * elbow.sin()], -1)
        task_loss = 0.5 * (self.motor_weight * ((y - targets) ** 2).mean() + ((produced - hand) ** 2).mean())
        reg = 0.0
        for (c, target), first, second in ((self.reg, z_demo, z_test), (self.em_reg, zeta_demo, zeta_test)):
            rate = ((first.sum(1) + second.sum(1)) / (2 * steps)).mean(0)
            reg = reg + 0.5 * c * ((rate - target) ** 2).sum()
        return task_loss + reg

    def meta_iteration(self, inputs, context, targets, hand, mask=None) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(inputs, context, targets, hand, mask)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flush-denormal", action="store_true", help="as eprop_l2l.runtime.configure_cpu does")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    from eprop_l2l.runs.build import from_experiment  # only to make the tasks and initial meta-parameters

    learner, family, config = from_experiment(args.preset)
    batch = family.sample(args.tasks or config.batch_size, torch.Generator().manual_seed(0))
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    port = StraightforwardPort.from_learner(learner, meta, lr=config.lr)
    tensors = (batch.inputs, batch.context, batch.targets, batch.extra["hand"], batch.mask)
    port.meta_iteration(*tensors)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        port.meta_iteration(*tensors)
        times.append(time.perf_counter() - start)
    print(f"{args.preset}: {batch.inputs.shape[0]} tasks, {args.threads} thread(s): median "
          f"{statistics.median(times):.3f} s per meta_iteration ({', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
