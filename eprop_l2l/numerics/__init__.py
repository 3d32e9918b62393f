"""The numerical kernels under the cell library: per-task linear algebra (``linalg``), causal and anticausal
filters and scans (``filters``), the spiking time loop with its hand-written backward (``fused_loop``), the
cells' reverse-time eligibility adjoint (``eligibility_adjoint``) and the native C++ loops (``native``). They
know tensors and recursions, not neurons: ``cells`` imports them, never the reverse."""
