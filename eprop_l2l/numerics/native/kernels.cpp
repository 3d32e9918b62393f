// Native CPU time loops of the cell library (built on first use by eprop_l2l/numerics/native/__init__.py).
//
// Why: at learning-to-learn sizes (B·N ≈ 10^3-10^4 per step, T = 500) a Python time loop costs ~10 µs per
// tensor operation in dispatch alone, far more than the arithmetic. These loops run the same equations as
// the Python reference loops (cells/spiking.py, numerics/fused_loop.py, numerics/filters.py) with one call per
// trial; the tests hold them equal to the reference (tests/test_native_kernels.py).
//
// * spiking_forward: LIF / ALIF trial. The recurrent product is event-driven — only the columns of the
//   neurons that spiked at t−1 are added (spikes are 0/1), which is exact and costs O(spikes·N) per step.
// * spiking_backward: the exact reverse-mode recursion of those equations (docs/equations.md, "The spiking
//   loop's backward"), for gradient paths full / no_reset / local.
// * linear_scan: y^t = x^t + d^t ⊙ y^{t∓1} forwards or backwards in time, with a constant, per-channel or
//   per-step decay: the leaky filters, the reverse-time adjoints and their autograd backward.
// * online_traces: online e-prop's per-synapse work over a block of steps (inner_loop/eprop_online.py): the
//   eligibility traces of LIF / ALIF, their κ-filter and the accumulation of L·ē (and of e for the rate
//   regulariser), state carried between blocks so that memory is independent of the trial length.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum Paths { FULL = 0, NO_RESET = 1, LOCAL = 2 };
enum Surrogate { TRIANGLE = 0, FAST_SIGMOID = 1 };

struct Constants {
  double alpha, v_th, scale, rho, gamma;
  int64_t n_ref;
  int64_t surrogate;
};

int64_t grain(int64_t work_per_item) {
  // batch elements per thread chunk: keep chunks above ~64k multiply-adds so small problems stay serial
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work_per_item));
}

// y += a·x over n contiguous entries (one row of an event-driven or transposed product).
template <typename T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}


// The per-neuron update of one step (restrict pointers and compile-time flags: branch-free, vectorised).
template <typename T, bool Adaptive, bool Refractory>
void forward_step(const T* __restrict i_in, const T* __restrict rec, const T* __restrict z_prev,
                  const T* __restrict v_prev, const T* __restrict r_prev, const T* __restrict a_prev,
                  const T* __restrict bet, T* __restrict v_now, T* __restrict r_now, T* __restrict z_now,
                  T* __restrict a_now, int64_t N, const Constants& c) {
  const T alpha = T(c.alpha), v_th = T(c.v_th), s = T(c.scale), rho = T(c.rho), n_ref = T(c.n_ref);
  for (int64_t j = 0; j < N; ++j) {
    T threshold = v_th;
    if constexpr (Adaptive) {
      const T a_new = rho * a_prev[j] + z_prev[j];
      a_now[j] = a_new;
      threshold = v_th + bet[j] * a_new;
    }
    const T v_new = ((alpha * v_prev[j] + i_in[j]) - v_th * z_prev[j]) + s * rec[j];
    v_now[j] = v_new;
    T spike = (v_new - threshold) / v_th > T(0) ? T(1) : T(0);
    if constexpr (Refractory) {
      const T r = std::min(std::max(r_prev[j] + n_ref * z_prev[j] - T(1), T(0)), n_ref);
      r_now[j] = r;
      spike = r > T(0) ? T(0) : spike;
    } else {
      r_now[j] = r_prev[j];
    }
    z_now[j] = spike;
  }
}

// One batch element's trial.
template <typename T, bool Adaptive, bool Refractory>
void forward_element(int64_t b, int64_t S, int64_t N, const T* cur, const T* wb, const T* bet, T* vp, T* ap, T* zp,
                     T* rp, T* rec, const Constants& c) {
  for (int64_t t = 1; t <= S; ++t) {
    const int64_t now = (b * (S + 1) + t) * N, before = now - N;
    const T* z_prev = zp + before;
    std::fill(rec, rec + N, T(0));
    for (int64_t i = 0; i < N; ++i) {  // event-driven: only the rows of neurons that spiked
      const T zi = z_prev[i];
      if (zi != T(0)) axpy(zi, wb + i * N, rec, N);
    }
    forward_step<T, Adaptive, Refractory>(cur + (b * S + t - 1) * N, rec, z_prev, vp + before, rp + before,
                                          Adaptive ? ap + before : rec, bet, vp + now, rp + now, zp + now,
                                          Adaptive ? ap + now : rec, N, c);
  }
}

template <typename T>
void forward_impl(const at::Tensor& currents, const at::Tensor& w_t, bool per_task, const at::Tensor& beta,
                  at::Tensor& v, at::Tensor& a, at::Tensor& z, at::Tensor& ref, const Constants& c,
                  bool adaptive) {
  const int64_t B = currents.size(0), S = currents.size(1), N = currents.size(2);
  const T* cur = currents.data_ptr<T>();
  const T* w = w_t.data_ptr<T>();
  const T* bet = adaptive ? beta.data_ptr<T>() : nullptr;
  T* vp = v.data_ptr<T>();
  T* ap = adaptive ? a.data_ptr<T>() : nullptr;
  T* zp = z.data_ptr<T>();
  T* rp = ref.data_ptr<T>();
  auto element = adaptive ? (c.n_ref > 0 ? forward_element<T, true, true> : forward_element<T, true, false>)
                          : (c.n_ref > 0 ? forward_element<T, false, true> : forward_element<T, false, false>);
  at::parallel_for(0, B, grain(S * N * 4), [&](int64_t b0, int64_t b1) {
    std::vector<T> rec(N);
    for (int64_t b = b0; b < b1; ++b)  // transposed weights: row i = the weights from neuron i
      element(b, S, N, cur, per_task ? w + b * N * N : w, bet, vp, ap, zp, rp, rec.data(), c);
  });
}

// One reverse step of batch element b at step t. Every input is a valid array (absent gradients and the absent
// recurrent term point at `zeros`), so the per-neuron loop is branch-free and vectorises; compile-time flags
// select the neuron model.
template <typename T, bool Adaptive, bool Refractory, int Shape>
void backward_step(const T* __restrict rec_term, const T* __restrict g_v, const T* __restrict g_z,
                   const T* __restrict g_a, const T* __restrict v, const T* __restrict a, const T* __restrict r,
                   const T* __restrict bet, T* __restrict dv_next, T* __restrict da_next, T* __restrict out,
                   T* __restrict dz_out, int64_t N, T reset, T adapt_in, T psi_on, const Constants& c) {
  const T alpha = T(c.alpha), v_th = T(c.v_th), rho = T(c.rho), gamma = T(c.gamma);
  for (int64_t j = 0; j < N; ++j) {
    T dz = g_z[j] + rec_term[j] - reset * dv_next[j];
    if constexpr (Adaptive) dz += adapt_in * da_next[j];
    T threshold = v_th;
    if constexpr (Adaptive) threshold = v_th + bet[j] * a[j];
    const T v_scaled = (v[j] - threshold) / v_th;
    T psi;
    if constexpr (Shape == TRIANGLE) {
      const T q = T(1) - std::abs(v_scaled);
      psi = gamma * (q > T(0) ? q : T(0));
    } else {
      const T d = T(1) + std::abs(v_scaled);
      psi = gamma / (d * d);
    }
    psi = psi / v_th * psi_on;
    if constexpr (Refractory) psi = r[j] > T(0) ? T(0) : psi;
    if constexpr (Adaptive) da_next[j] = g_a[j] + rho * da_next[j] - bet[j] * psi * dz;
    const T dv = g_v[j] + alpha * dv_next[j] + psi * dz;
    out[j] = dv;
    dv_next[j] = dv;
    dz_out[j] = dz;
  }
}

// The arguments of backward_step for batch element b at step t.
template <typename T, bool Adaptive, bool Refractory, int Shape>
inline void backward_at(int64_t b, int64_t t, int64_t S, int64_t N, const T* rec_term, const T* gv, const T* gz,
                        const T* ga, const T* vp, const T* ap, const T* rp, const T* bet, T* dvn, T* dan, T* dvp,
                        T* dz0p, T* scratch, const T* zeros, const Constants& c, bool reset_path) {
  const int64_t at_t = (b * (S + 1) + t) * N;
  const bool later = t < S;
  backward_step<T, Adaptive, Refractory, Shape>(
      rec_term ? rec_term : zeros, gv ? gv + at_t : zeros, gz ? gz + at_t : zeros, ga ? ga + at_t : zeros,
      vp + at_t, Adaptive ? ap + at_t : zeros, rp + at_t, Adaptive ? bet : zeros, dvn + b * N, dan + b * N,
      dvp + at_t, t == 0 ? dz0p + b * N : scratch, N, (later && reset_path) ? T(c.v_th) : T(0),
      (later && Adaptive) ? T(1) : T(0), t > 0 ? T(1) : T(0), c);
}

// out = s·Wᵀd for one task's W [N, N] (row j = the weights onto neuron j): four rows per pass, so that `out` is
// loaded and stored a quarter as often (the loop is bound by memory operations, not multiply-adds).
template <typename T>
void transposed_product(const T* __restrict w, const T* __restrict d, T s, T* __restrict out, int64_t N) {
  std::fill(out, out + N, T(0));
  int64_t j = 0;
  for (; j + 4 <= N; j += 4) {
    const T d0 = s * d[j], d1 = s * d[j + 1], d2 = s * d[j + 2], d3 = s * d[j + 3];
    const T *r0 = w + j * N, *r1 = r0 + N, *r2 = r1 + N, *r3 = r2 + N;
    for (int64_t i = 0; i < N; ++i) out[i] += d0 * r0[i] + d1 * r1[i] + d2 * r2[i] + d3 * r3[i];
  }
  for (; j < N; ++j) axpy(s * d[j], w + j * N, out, N);
}

template <typename T, bool Adaptive, bool Refractory, int Shape>
void backward_loops(const T* gv, const T* gz, const T* ga, const at::Tensor& w_rec, bool per_task, const T* vp,
                    const T* ap, const T* rp, const T* bet, const at::Tensor& dv_next, T* dan, T* dvp, T* dz0p,
                    int64_t B, int64_t S, int64_t N, const Constants& c, int64_t paths) {
  const bool recurrent = paths != LOCAL, reset_path = paths == FULL;
  const T s = T(c.scale);
  T* dvn = dv_next.data_ptr<T>();
  if (!per_task) {
    // shared weights: the recurrent term of all batch elements is one matrix product per step (BLAS)
    at::Tensor rec = at::empty({B, N}, dv_next.options());
    at::Tensor w_scaled = w_rec * c.scale;
    const T* rec_p = rec.data_ptr<T>();
    for (int64_t t = S; t >= 0; --t) {
      const bool use = recurrent && t < S;
      if (use) at::mm_out(rec, dv_next, w_scaled);
      at::parallel_for(0, B, grain(N * 16), [&](int64_t b0, int64_t b1) {
        std::vector<T> zeros(N, T(0)), scratch(N);
        for (int64_t b = b0; b < b1; ++b)
          backward_at<T, Adaptive, Refractory, Shape>(b, t, S, N, use ? rec_p + b * N : nullptr, gv, gz, ga, vp, ap,
                                                      rp, bet, dvn, dan, dvp, dz0p, scratch.data(), zeros.data(), c,
                                                      reset_path);
      });
    }
    return;
  }
  // per-task weights [B, N, N]: each batch element runs its own reverse loop, Wᵀδv as row updates
  const T* w = w_rec.data_ptr<T>();
  at::parallel_for(0, B, grain(S * N * N), [&](int64_t b0, int64_t b1) {
    std::vector<T> rec(N), zeros(N, T(0)), scratch(N);
    for (int64_t b = b0; b < b1; ++b) {
      const T* wb = w + b * N * N;
      for (int64_t t = S; t >= 0; --t) {
        const bool use = recurrent && t < S;
        if (use) transposed_product(wb, dvn + b * N, s, rec.data(), N);
        backward_at<T, Adaptive, Refractory, Shape>(b, t, S, N, use ? rec.data() : nullptr, gv, gz, ga, vp, ap, rp,
                                                    bet, dvn, dan, dvp, dz0p, scratch.data(), zeros.data(), c,
                                                    reset_path);
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& g_v, const at::Tensor& g_z, const at::Tensor& g_a, const at::Tensor& w_rec,
                   bool per_task, const at::Tensor& v, const at::Tensor& a, const at::Tensor& ref,
                   const at::Tensor& beta, at::Tensor& delta_v, at::Tensor& dz0, at::Tensor& da0,
                   const Constants& c, int64_t paths, bool adaptive) {
  const int64_t B = v.size(0), S = v.size(1) - 1, N = v.size(2);
  const T* gv = g_v.defined() ? g_v.data_ptr<T>() : nullptr;
  const T* gz = g_z.defined() ? g_z.data_ptr<T>() : nullptr;
  const T* ga = (adaptive && g_a.defined()) ? g_a.data_ptr<T>() : nullptr;
  const T* vp = v.data_ptr<T>();
  const T* ap = adaptive ? a.data_ptr<T>() : nullptr;
  const T* rp = ref.data_ptr<T>();
  const T* bet = adaptive ? beta.data_ptr<T>() : nullptr;
  at::Tensor dv_next = at::zeros({B, N}, v.options());
  at::Tensor da_next = at::zeros({B, N}, v.options());
  T* dan = da_next.data_ptr<T>();
  T* dvp = delta_v.data_ptr<T>();
  T* dz0p = dz0.data_ptr<T>();
#define EPROP_BACKWARD(ADAPTIVE, REFRACTORY, SHAPE)                                                              \
  backward_loops<T, ADAPTIVE, REFRACTORY, SHAPE>(gv, gz, ga, w_rec, per_task, vp, ap, rp, bet, dv_next, dan, dvp, \
                                                 dz0p, B, S, N, c, paths)
  const bool refractory = c.n_ref > 0;
  if (c.surrogate == TRIANGLE) {
    if (adaptive) { if (refractory) EPROP_BACKWARD(true, true, TRIANGLE); else EPROP_BACKWARD(true, false, TRIANGLE); }
    else { if (refractory) EPROP_BACKWARD(false, true, TRIANGLE); else EPROP_BACKWARD(false, false, TRIANGLE); }
  } else {
    if (adaptive) { if (refractory) EPROP_BACKWARD(true, true, FAST_SIGMOID); else EPROP_BACKWARD(true, false, FAST_SIGMOID); }
    else { if (refractory) EPROP_BACKWARD(false, true, FAST_SIGMOID); else EPROP_BACKWARD(false, false, FAST_SIGMOID); }
  }
#undef EPROP_BACKWARD
  if (adaptive) da0.copy_(da_next);
}

void check_cpu_contiguous(const at::Tensor& x, const char* name) {
  TORCH_CHECK(!x.defined() || (x.device().is_cpu() && x.is_contiguous()), name, ": expected a contiguous CPU tensor");
}

}  // namespace

// currents [B, T, N]; w_rec [N, N] or [B, N, N]; initial state [B, N] (a0 undefined for LIF); beta [N].
// Returns the padded trajectory (v, a, z, ref) [B, T+1, N] (a undefined for LIF).
std::vector<at::Tensor> spiking_forward(at::Tensor currents, at::Tensor w_rec, at::Tensor v0, c10::optional<at::Tensor> a0,
                                        at::Tensor z0, at::Tensor ref0, c10::optional<at::Tensor> beta, double alpha,
                                        double v_th, double scale, int64_t n_ref, double rho) {
  const bool adaptive = a0.has_value();
  const bool per_task = w_rec.dim() == 3;
  currents = currents.contiguous();
  check_cpu_contiguous(currents, "currents");
  const int64_t B = currents.size(0), S = currents.size(1), N = currents.size(2);
  at::Tensor w_t = w_rec.transpose(-1, -2).contiguous();
  auto pad = [&](const at::Tensor& x0) {
    at::Tensor out = at::empty({B, S + 1, N}, currents.options());
    out.select(1, 0).copy_(x0);
    return out;
  };
  at::Tensor v = pad(v0), z = pad(z0), ref = pad(ref0);
  at::Tensor a = adaptive ? pad(*a0) : at::Tensor();
  at::Tensor b = adaptive ? beta->contiguous() : at::Tensor();
  Constants c{alpha, v_th, scale, rho, 0.0, n_ref, 0};
  AT_DISPATCH_FLOATING_TYPES(currents.scalar_type(), "spiking_forward", [&] {
    forward_impl<scalar_t>(currents, w_t, per_task, b, v, a, z, ref, c, adaptive);
  });
  return {v, a, z, ref};
}

// Gradients of the padded trajectory (any may be undefined = zero) → δv [B, T+1, N], ∂E/∂z^0, ∂E/∂a^0.
std::vector<at::Tensor> spiking_backward(c10::optional<at::Tensor> g_v, c10::optional<at::Tensor> g_z,
                                         c10::optional<at::Tensor> g_a, at::Tensor w_rec, at::Tensor v,
                                         c10::optional<at::Tensor> a, at::Tensor ref, c10::optional<at::Tensor> beta,
                                         double alpha, double v_th, double scale, int64_t n_ref, double rho,
                                         double gamma, int64_t surrogate, int64_t paths) {
  const bool adaptive = a.has_value();
  const bool per_task = w_rec.dim() == 3;
  auto contiguous = [](const c10::optional<at::Tensor>& x) {
    return x.has_value() ? x->contiguous() : at::Tensor();
  };
  at::Tensor gv = contiguous(g_v), gz = contiguous(g_z), ga = contiguous(g_a);
  at::Tensor vc = v.contiguous(), rc = ref.contiguous(), ac = contiguous(a), bc = contiguous(beta);
  at::Tensor w = w_rec.contiguous();
  for (auto* x : {&gv, &gz, &ga, &vc, &rc, &ac, &bc, &w}) check_cpu_contiguous(*x, "spiking_backward input");
  const int64_t B = vc.size(0), N = vc.size(2);
  at::Tensor delta_v = at::empty_like(vc);
  at::Tensor dz0 = at::empty({B, N}, vc.options());
  at::Tensor da0 = adaptive ? at::empty({B, N}, vc.options()) : at::Tensor();
  Constants c{alpha, v_th, scale, rho, gamma, n_ref, surrogate};
  AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "spiking_backward", [&] {
    backward_impl<scalar_t>(gv, gz, ga, w, per_task, vc, ac, rc, bc, delta_v, dz0, da0, c, paths, adaptive);
  });
  return {delta_v, dz0, da0};
}

template <typename T>
inline void scan_step(const T* __restrict x, const T* __restrict d, T* __restrict acc, T* __restrict y, int64_t M) {
  for (int64_t m = 0; m < M; ++m) {
    acc[m] = x[m] + d[m] * acc[m];
    y[m] = acc[m];
  }
}

// ψ = (γ/v_th)·pd((v − thr)/v_th), zero where ref > 0, for thr = v_th (+ a per-entry offset, the adaptive
// part β·a); with Grad, the backward grad·∂ψ/∂v instead (∂ψ/∂thr = −∂ψ/∂v). n contiguous entries.
template <typename T, int Shape, bool Offset, bool Grad, bool Refractory>
void psi_block(const T* __restrict v, const T* __restrict offset, const T* __restrict ref, const T* __restrict grad,
               T* __restrict out, int64_t n, T v_th, T gamma) {
  for (int64_t i = 0; i < n; ++i) {
    T threshold = v_th;
    if constexpr (Offset) threshold = v_th + offset[i];
    const T u = (v[i] - threshold) / v_th;
    const T a = std::abs(u);
    // branch-free (comparisons as 0/1 factors, max for the ramp): every instantiation vectorises
    T value;
    if constexpr (Grad) {  // triangle: −γ·sign(u)/v_th² inside |u| < 1; fast sigmoid: −2γ·sign(u)/(1+|u|)³/v_th²
      const T sign = T(u > T(0)) - T(u < T(0));
      if constexpr (Shape == TRIANGLE) {
        value = -gamma * sign / v_th / v_th * T(a < T(1));
      } else {
        const T d = T(1) + a;
        value = T(-2) * gamma * sign / (d * d * d) / v_th / v_th;
      }
      value = value * grad[i];
    } else if constexpr (Shape == TRIANGLE) {
      value = gamma * std::max(T(1) - a, T(0)) / v_th;
    } else {
      const T d = T(1) + a;
      value = gamma / (d * d) / v_th;
    }
    if constexpr (Refractory) value *= T(ref[i] <= T(0));
    out[i] = value;
  }
}

// The inputs may be batch-strided views [B, T, N] whose last two dims are contiguous (a padded trajectory's
// states without the initial one, its time slices per task, or the gradient flowing into them): no copies.
bool rows_contiguous(const at::Tensor& x) {
  return x.dim() == 3 && x.stride(2) == 1 && (x.size(1) <= 1 || x.stride(1) == x.size(2));
}

// x itself where its rows are contiguous (any batch stride), else a contiguous copy.
at::Tensor with_contiguous_rows(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, name, ": expected a [B, T, M] CPU tensor");
  return rows_contiguous(x) ? x : x.contiguous();
}

template <typename T, int Shape, bool Offset, bool Grad, bool Refractory>
void psi_all(const at::Tensor& v, const at::Tensor& offset, const at::Tensor& ref, const at::Tensor& grad,
             at::Tensor& out, T v_th, T gamma) {
  const int64_t B = v.size(0), n = v.size(1) * v.size(2);
  at::parallel_for(0, B, grain(n * 4), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      psi_block<T, Shape, Offset, Grad, Refractory>(
          v.data_ptr<T>() + b * v.stride(0), Offset ? offset.data_ptr<T>() + b * offset.stride(0) : nullptr,
          ref.data_ptr<T>() + b * ref.stride(0), Grad ? grad.data_ptr<T>() + b * grad.stride(0) : nullptr,
          out.data_ptr<T>() + b * out.stride(0), n, v_th, gamma);
  });
}

// Run-time choices → compile-time flags (one instantiation per combination).
template <typename T>
struct PsiArgs {
  const at::Tensor &v, &offset, &ref, &grad;
  at::Tensor& out;
  T v_th, gamma;
  bool refractory;
};

template <typename T, int Shape, bool Offset, bool Grad>
void psi_refractory(const PsiArgs<T>& a) {
  if (a.refractory) psi_all<T, Shape, Offset, Grad, true>(a.v, a.offset, a.ref, a.grad, a.out, a.v_th, a.gamma);
  else psi_all<T, Shape, Offset, Grad, false>(a.v, a.offset, a.ref, a.grad, a.out, a.v_th, a.gamma);
}

template <typename T, int Shape, bool Offset>
void psi_grad(const PsiArgs<T>& a) {
  if (a.grad.defined()) psi_refractory<T, Shape, Offset, true>(a); else psi_refractory<T, Shape, Offset, false>(a);
}

template <typename T, int Shape>
void psi_offset(const PsiArgs<T>& a) {
  if (a.offset.defined()) psi_grad<T, Shape, true>(a); else psi_grad<T, Shape, false>(a);
}

at::Tensor pseudo_derivative(at::Tensor v, c10::optional<at::Tensor> offset_, at::Tensor ref,
                             c10::optional<at::Tensor> grad_, double v_th, double gamma, int64_t surrogate,
                             bool refractory) {
  auto prepare = [&](at::Tensor x) {
    return with_contiguous_rows(x.dim() == 3 ? x : x.reshape({1, -1, 1}), "pseudo_derivative");
  };
  const auto shape = v.sizes().vec();
  at::Tensor vv = prepare(v), rr = prepare(ref);
  at::Tensor off = offset_.has_value() ? prepare(*offset_) : at::Tensor();
  at::Tensor g = grad_.has_value() ? prepare(*grad_) : at::Tensor();
  TORCH_CHECK(rr.sizes() == vv.sizes() && (!off.defined() || off.sizes() == vv.sizes()) &&
              (!g.defined() || g.sizes() == vv.sizes()), "pseudo_derivative: shapes");
  at::Tensor out = at::empty(vv.sizes(), vv.options());
  AT_DISPATCH_FLOATING_TYPES(vv.scalar_type(), "pseudo_derivative", [&] {
    const PsiArgs<scalar_t> args{vv, off, rr, g, out, scalar_t(v_th), scalar_t(gamma), refractory};
    if (surrogate == TRIANGLE) psi_offset<scalar_t, TRIANGLE>(args); else psi_offset<scalar_t, FAST_SIGMOID>(args);
  });
  return out.reshape(shape);
}

// x [B, T, M]; decay of M entries (per channel, a single entry broadcast) or [B, T, M] (per step);
// reverse: y^t = x^t + d^t y^{t+1} (y^T = 0), else y^t = x^t + d^t y^{t-1} (y^{-1} = initial or 0).
at::Tensor linear_scan(at::Tensor x, at::Tensor decay, bool reverse, c10::optional<at::Tensor> initial) {
  x = with_contiguous_rows(x, "linear_scan: x");
  decay = decay.contiguous();
  const int64_t B = x.size(0), S = x.size(1), M = x.size(2), xs = x.stride(0);
  const bool per_step = decay.dim() == 3;
  TORCH_CHECK(per_step ? decay.sizes() == x.sizes() : (decay.numel() == M || decay.numel() == 1),
              "linear_scan: decay must have 1, M or B·T·M entries");
  at::Tensor d = per_step || decay.numel() == M ? decay : decay.reshape({1}).expand({M}).contiguous();
  at::Tensor init = initial.has_value() ? initial->contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_scan", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dp = d.data_ptr<scalar_t>();
    const scalar_t* ip = init.defined() ? init.data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain(S * M), [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> acc(M);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t m = 0; m < M; ++m) acc[m] = (ip && !reverse) ? ip[b * M + m] : scalar_t(0);
        for (int64_t k = 0; k < S; ++k) {
          const int64_t t = reverse ? S - 1 - k : k;
          const int64_t off = (b * S + t) * M;
          scan_step(xp + b * xs + t * M, per_step ? dp + off : dp, acc.data(), yp + off, M);
        }
      }
    });
  });
  return y;
}

// The reverse-time adjoint of a neuron's eligibility vector (docs/equations.md, "The fused adjoint"), one pass per
// task, for ψ, S [B, T, M] (rows contiguous, any batch stride):
//   factorised cells (LIF, rate):  λ_v^t = ψ^t S^t + α λ_v^{t+1}
//   adaptive cells (ALIF, β [M]):   λ_a^t = −β ψ^t S^t + (ρ − β ψ^t) λ_a^{t+1},
//                                   λ_v^t = ψ^t (S^t + λ_a^{t+1}) + α λ_v^{t+1},      λ^T = 0.
// With `keep` it also returns A^t = λ_a^{t+1}, which the reverse mode needs. As whole-trial tensor operations
// the adaptive recursion took ~11 passes over [B, T, M] (42 ms for 32 × 500 × 400 on one thread), the
// factorised one three (12 ms); here each is one.
template <typename T, bool Adaptive, bool Keep>
void adjoint_element(const T* __restrict psi, const T* __restrict sig, const T* __restrict beta, T* __restrict lam_v,
                     T* __restrict ahead, T* __restrict lv, T* __restrict la, int64_t S, int64_t M, T alpha, T rho) {
  for (int64_t t = S - 1; t >= 0; --t) {
    const T* p = psi + t * M;
    const T* s = sig + t * M;
    T* out = lam_v + t * M;
    for (int64_t m = 0; m < M; ++m) {
      if constexpr (Adaptive) {
        const T next_a = la[m];
        const T bp = beta[m] * p[m];
        if constexpr (Keep) ahead[t * M + m] = next_a;
        lv[m] = p[m] * (s[m] + next_a) + alpha * lv[m];
        la[m] = (rho - bp) * next_a - bp * s[m];
      } else {
        lv[m] = p[m] * s[m] + alpha * lv[m];
      }
      out[m] = lv[m];
    }
  }
}

// Its reverse mode, forwards in time: U_v^t = ḡ^t + α U_v^{t−1}; adaptive: U_a^t = ψ^{t−1} U_v^{t−1} +
// (ρ − β ψ^{t−1}) U_a^{t−1}, W = U_v − β U_a (else W = U_v);  ∂/∂S^t = ψ^t W^t,  ∂/∂ψ^t = (S^t + A^t) W^t.
template <typename T, bool Adaptive>
void adjoint_backward_element(const T* __restrict psi, const T* __restrict sig, const T* __restrict ahead,
                              const T* __restrict grad, const T* __restrict beta, T* __restrict grad_sig,
                              T* __restrict grad_psi, T* __restrict uv, T* __restrict ua, int64_t S, int64_t M,
                              T alpha, T rho) {
  for (int64_t t = 0; t < S; ++t) {
    const T* p = psi + t * M;
    const T* prev = t > 0 ? psi + (t - 1) * M : p;  // at t = 0, U_v = U_a = 0 make U_a^0 = 0 whatever it reads
    const T* s = sig + t * M;
    const T* gr = grad + t * M;
    for (int64_t m = 0; m < M; ++m) {
      const T u_v = gr[m] + alpha * uv[m];
      T w = u_v, drive = s[m];
      if constexpr (Adaptive) {
        const T u_a = prev[m] * uv[m] + (rho - beta[m] * prev[m]) * ua[m];
        w = u_v - beta[m] * u_a;
        drive = s[m] + ahead[t * M + m];
        ua[m] = u_a;
      }
      grad_sig[t * M + m] = p[m] * w;
      grad_psi[t * M + m] = drive * w;
      uv[m] = u_v;
    }
  }
}

std::vector<at::Tensor> eligibility_adjoint(at::Tensor psi, at::Tensor signal, c10::optional<at::Tensor> beta_,
                                            double alpha, double rho, bool keep) {
  psi = with_contiguous_rows(psi, "eligibility_adjoint: psi");
  signal = with_contiguous_rows(signal, "eligibility_adjoint: signal");
  const bool adaptive = beta_.has_value();
  at::Tensor beta = adaptive ? beta_->contiguous() : at::Tensor();
  TORCH_CHECK(psi.sizes() == signal.sizes() && (!adaptive || beta.numel() == psi.size(2)),
              "eligibility_adjoint: shapes");
  keep = keep && adaptive;
  const int64_t B = psi.size(0), S = psi.size(1), M = psi.size(2);
  at::Tensor lam_v = at::empty(psi.sizes(), psi.options());
  at::Tensor ahead = keep ? at::empty(psi.sizes(), psi.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(psi.scalar_type(), "eligibility_adjoint", [&] {
    auto element = !adaptive ? adjoint_element<scalar_t, false, false>
                   : keep    ? adjoint_element<scalar_t, true, true>
                             : adjoint_element<scalar_t, true, false>;
    at::parallel_for(0, B, grain(S * M * 4), [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> lv(M), la(M);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(lv.begin(), lv.end(), scalar_t(0));
        std::fill(la.begin(), la.end(), scalar_t(0));
        element(psi.data_ptr<scalar_t>() + b * psi.stride(0), signal.data_ptr<scalar_t>() + b * signal.stride(0),
                adaptive ? beta.data_ptr<scalar_t>() : nullptr, lam_v.data_ptr<scalar_t>() + b * S * M,
                keep ? ahead.data_ptr<scalar_t>() + b * S * M : nullptr, lv.data(), la.data(), S, M,
                scalar_t(alpha), scalar_t(rho));
      }
    });
  });
  return {lam_v, ahead};
}

std::vector<at::Tensor> eligibility_adjoint_backward(at::Tensor psi, at::Tensor signal, c10::optional<at::Tensor> ahead_,
                                                     at::Tensor grad, c10::optional<at::Tensor> beta_, double alpha,
                                                     double rho) {
  psi = with_contiguous_rows(psi, "eligibility_adjoint_backward: psi");
  signal = with_contiguous_rows(signal, "eligibility_adjoint_backward: signal");
  grad = grad.contiguous();
  const bool adaptive = beta_.has_value();
  TORCH_CHECK(!adaptive || ahead_.has_value(), "eligibility_adjoint_backward: an adaptive cell needs λ_a^{t+1}");
  at::Tensor beta = adaptive ? beta_->contiguous() : at::Tensor();
  at::Tensor ahead = adaptive ? ahead_->contiguous() : at::Tensor();
  TORCH_CHECK(psi.sizes() == signal.sizes() && grad.sizes() == psi.sizes() &&
              (!adaptive || (ahead.sizes() == psi.sizes() && beta.numel() == psi.size(2))),
              "eligibility_adjoint_backward: shapes");
  const int64_t B = psi.size(0), S = psi.size(1), M = psi.size(2);
  at::Tensor grad_sig = at::empty(psi.sizes(), psi.options());
  at::Tensor grad_psi = at::empty(psi.sizes(), psi.options());
  AT_DISPATCH_FLOATING_TYPES(psi.scalar_type(), "eligibility_adjoint_backward", [&] {
    auto element = adaptive ? adjoint_backward_element<scalar_t, true> : adjoint_backward_element<scalar_t, false>;
    at::parallel_for(0, B, grain(S * M * 4), [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> uv(M), ua(M);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(uv.begin(), uv.end(), scalar_t(0));
        std::fill(ua.begin(), ua.end(), scalar_t(0));
        const int64_t off = b * S * M;
        element(psi.data_ptr<scalar_t>() + b * psi.stride(0), signal.data_ptr<scalar_t>() + b * signal.stride(0),
                adaptive ? ahead.data_ptr<scalar_t>() + off : nullptr, grad.data_ptr<scalar_t>() + off,
                adaptive ? beta.data_ptr<scalar_t>() : nullptr, grad_sig.data_ptr<scalar_t>() + off,
                grad_psi.data_ptr<scalar_t>() + off, uv.data(), ua.data(), S, M, scalar_t(alpha), scalar_t(rho));
      }
    });
  });
  return {grad_sig, grad_psi};
}


// x [G, R, K] (mostly zeros, e.g. spikes) @ w [K, M] (shared) or [G, K, M] (per group) → [G, R, M]: only the rows
// of w at the nonzeros of x are added, so the cost is nnz(x)·M instead of R·K·M; exact (zeros contribute nothing).
at::Tensor sparse_input_matmul(at::Tensor x, at::Tensor w) {
  x = with_contiguous_rows(x, "sparse_input_matmul: x");
  w = w.contiguous();
  const bool per_group = w.dim() == 3;
  TORCH_CHECK((w.dim() == 2 || (per_group && w.size(0) == x.size(0))) && w.size(-2) == x.size(2),
              "sparse_input_matmul: shapes");
  const int64_t G = x.size(0), R = x.size(1), K = x.size(2), M = w.size(-1), xs = x.stride(0);
  at::Tensor out = at::zeros({G, R, M}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_input_matmul", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, G * R, grain(K * 8), [&](int64_t row0, int64_t row1) {
      for (int64_t row = row0; row < row1; ++row) {
        const int64_t grp = row / R;
        const scalar_t* xr = xp + grp * xs + (row % R) * K;
        const scalar_t* wg = per_group ? wp + grp * K * M : wp;
        scalar_t* o = op + row * M;
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t xk = xr[k];
          if (xk != scalar_t(0)) axpy(xk, wg + k * M, o, M);
        }
      }
    });
  });
  return out;
}

// xᵀ g per group for x [G, R, K] (mostly zeros) and g [G, R, M]: [G, K, M], or their sum over the groups [K, M]
// (`sum_groups`: a shared weight's gradient over a batch of trials) — the weight gradient of a sparse-input
// product. Threads own disjoint output rows k (summed) or groups, so no two write one entry.
at::Tensor sparse_input_matmul_t(at::Tensor x, at::Tensor g, bool sum_groups) {
  x = with_contiguous_rows(x, "sparse_input_matmul_t: x");
  g = with_contiguous_rows(g, "sparse_input_matmul_t: g");
  TORCH_CHECK(x.size(0) == g.size(0) && x.size(1) == g.size(1), "sparse_input_matmul_t: shapes");
  const int64_t G = x.size(0), R = x.size(1), K = x.size(2), M = g.size(2), xs = x.stride(0), gs = g.stride(0);
  at::Tensor out = sum_groups ? at::zeros({K, M}, g.options()) : at::zeros({G, K, M}, g.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_input_matmul_t", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    auto accumulate = [&](int64_t grp, int64_t k0, int64_t k1, scalar_t* o) {
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t* xr = xp + grp * xs + r * K;
        const scalar_t* gr = gp + grp * gs + r * M;
        for (int64_t k = k0; k < k1; ++k) {
          const scalar_t xk = xr[k];
          if (xk != scalar_t(0)) axpy(xk, gr, o + k * M, M);
        }
      }
    };
    if (sum_groups) {
      at::parallel_for(0, K, grain(G * R * 8), [&](int64_t k0, int64_t k1) {
        for (int64_t grp = 0; grp < G; ++grp) accumulate(grp, k0, k1, op);
      });
    } else {
      at::parallel_for(0, G, grain(R * K), [&](int64_t g0, int64_t g1) {
        for (int64_t grp = g0; grp < g1; ++grp) accumulate(grp, 0, K, op + grp * K * M);
      });
    }
  });
  return out;
}

// Online e-prop of one weight group over a block of C steps (the closed forms of cells/lif.py, cells/alif.py and
// the accumulation of inner_loop/eprop_online.py, in the same operation order), for ψ, L [B, C, N] and the
// presynaptic trace x̄ [B, C+1, P] (index 0: the last step of the previous block), carried state ē [B, N, P],
// adaptive ε_a [B, N, P] and ψ^{t−1} [B, N], accumulators acc (and acc_reg) [N, P] (shared weights: summed over
// the batch) or [B, N, P] (per task):
//   ε_a^t = ψ^{t−1} x̄^{t−1} + (ρ − β ψ^{t−1}) ε_a^{t−1}          (adaptive only)
//   e^t = ψ^t (x̄^t − β ε_a^t)   (LIF: ψ^t x̄^t),   ē^t = κ ē^{t−1} + e^t,   acc += L^t ē^t,   acc_reg += e^t
// Each synapse row (b, j) is an independent recursion given ψ, L and x̄, so a row runs through all C steps while
// it and its accumulator row stay in cache; threads own disjoint rows j (no two write one accumulator entry).
template <typename T, bool Adaptive, bool Regularised>
void trace_row(const T* __restrict psi, const T* __restrict sig, const T* __restrict xbar, T* __restrict ebar,
               T* __restrict eps_a, T* __restrict psi_prev, T* __restrict acc, T* __restrict reg, T beta, int64_t C,
               int64_t N, int64_t P, T kappa, T rho) {
  for (int64_t t = 0; t < C; ++t) {
    const T p = psi[t * N], l = sig[t * N];
    const T* __restrict now = xbar + (t + 1) * P;
    if constexpr (Adaptive) {
      const T pp = *psi_prev, decay = rho - beta * pp;
      const T* __restrict before = xbar + t * P;
      for (int64_t i = 0; i < P; ++i) {
        const T ea = pp * before[i] + decay * eps_a[i];
        eps_a[i] = ea;
        const T e = p * (now[i] - beta * ea);
        const T eb = kappa * ebar[i] + e;
        ebar[i] = eb;
        acc[i] += l * eb;
        if constexpr (Regularised) reg[i] += e;
      }
      *psi_prev = p;
    } else {
      for (int64_t i = 0; i < P; ++i) {
        const T e = p * now[i];
        const T eb = kappa * ebar[i] + e;
        ebar[i] = eb;
        acc[i] += l * eb;
        if constexpr (Regularised) reg[i] += e;
      }
    }
  }
}

template <typename T, bool Adaptive, bool Regularised>
void online_traces_impl(const at::Tensor& psi, const at::Tensor& sig, const at::Tensor& xbar, at::Tensor& ebar,
                        at::Tensor& eps_a, at::Tensor& psi_prev, const at::Tensor& beta, at::Tensor& acc,
                        at::Tensor& reg, bool per_task, T kappa, T rho) {
  const int64_t B = psi.size(0), C = psi.size(1), N = psi.size(2), P = xbar.size(2);
  const T* ps = psi.data_ptr<T>();
  const T* sg = sig.data_ptr<T>();
  const T* xb = xbar.data_ptr<T>();
  T* eb = ebar.data_ptr<T>();
  T* ea = Adaptive ? eps_a.data_ptr<T>() : nullptr;
  T* pp = Adaptive ? psi_prev.data_ptr<T>() : nullptr;
  const T* bt = Adaptive ? beta.data_ptr<T>() : nullptr;
  T* ac = acc.data_ptr<T>();
  T* rg = Regularised ? reg.data_ptr<T>() : nullptr;
  at::parallel_for(0, N, grain(B * C * P * 4), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = (b * N + j) * P, out = per_task ? row : j * P;
        trace_row<T, Adaptive, Regularised>(ps + b * C * N + j, sg + b * C * N + j, xb + b * (C + 1) * P, eb + row,
                                            Adaptive ? ea + row : nullptr, Adaptive ? pp + b * N + j : nullptr,
                                            ac + out, Regularised ? rg + out : nullptr, Adaptive ? bt[j] : T(0), C,
                                            N, P, kappa, rho);
      }
  });
}

// ψ, L [B, C, N]; x̄ [B, C+1, P]; ē [B, N, P]; ε_a [B, N, P] and ψ^{t−1} [B, N] with β [N] for adaptive cells;
// acc (and acc_reg) [N, P] or [B, N, P]. The state and the accumulators are updated in place.
void online_traces(at::Tensor psi, at::Tensor signal, at::Tensor xbar, at::Tensor ebar, c10::optional<at::Tensor> eps_a,
                   c10::optional<at::Tensor> psi_prev, c10::optional<at::Tensor> beta, at::Tensor acc,
                   c10::optional<at::Tensor> acc_reg, double kappa, double rho) {
  psi = psi.contiguous();
  signal = signal.contiguous();
  xbar = xbar.contiguous();
  const bool adaptive = eps_a.has_value(), regularised = acc_reg.has_value();
  const int64_t B = psi.size(0), C = psi.size(1), N = psi.size(2), P = xbar.size(2);
  const bool per_task = acc.dim() == 3;
  at::Tensor ea = adaptive ? *eps_a : at::Tensor(), pp = adaptive ? *psi_prev : at::Tensor();
  at::Tensor bt = adaptive ? beta->contiguous() : at::Tensor(), reg = regularised ? *acc_reg : at::Tensor();
  TORCH_CHECK(signal.sizes() == psi.sizes() && xbar.dim() == 3 && xbar.size(0) == B && xbar.size(1) == C + 1 &&
              ebar.sizes() == at::IntArrayRef({B, N, P}) && ebar.is_contiguous() && acc.is_contiguous() &&
              acc.size(-2) == N && acc.size(-1) == P && (!per_task || acc.size(0) == B) &&
              (!regularised || (reg.sizes() == acc.sizes() && reg.is_contiguous())) &&
              (!adaptive || (ea.sizes() == ebar.sizes() && ea.is_contiguous() && pp.sizes() == at::IntArrayRef({B, N}) &&
                             pp.is_contiguous() && bt.numel() == N)),
              "online_traces: shapes");
  for (const at::Tensor* x : {&signal, &xbar, &ebar, &acc})
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == psi.scalar_type(), "online_traces: dtypes");
  AT_DISPATCH_FLOATING_TYPES(psi.scalar_type(), "online_traces", [&] {
    const scalar_t k = scalar_t(kappa), r = scalar_t(rho);
    if (adaptive) {
      if (regularised) online_traces_impl<scalar_t, true, true>(psi, signal, xbar, ebar, ea, pp, bt, acc, reg, per_task, k, r);
      else online_traces_impl<scalar_t, true, false>(psi, signal, xbar, ebar, ea, pp, bt, acc, reg, per_task, k, r);
    } else {
      if (regularised) online_traces_impl<scalar_t, false, true>(psi, signal, xbar, ebar, ea, pp, bt, acc, reg, per_task, k, r);
      else online_traces_impl<scalar_t, false, false>(psi, signal, xbar, ebar, ea, pp, bt, acc, reg, per_task, k, r);
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sparse_input_matmul", &sparse_input_matmul);
  m.def("sparse_input_matmul_t", &sparse_input_matmul_t);
  m.def("spiking_forward", &spiking_forward);
  m.def("spiking_backward", &spiking_backward);
  m.def("linear_scan", &linear_scan);
  m.def("pseudo_derivative", &pseudo_derivative);
  m.def("eligibility_adjoint", &eligibility_adjoint);
  m.def("eligibility_adjoint_backward", &eligibility_adjoint_backward);
  m.def("online_traces", &online_traces);
}
