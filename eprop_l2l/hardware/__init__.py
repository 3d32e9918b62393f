"""Hardware export: the trained inner-loop rule as data, its execution in PyTorch at float and at learning-engine
(fixed-point) precision, NIR export of the networks, and the Lava back-end.

This package's ``__init__`` imports nothing (in particular no torch), so that the Lava program in
:mod:`eprop_l2l.hardware.lava`, which runs in its own Python 3.10 environment without torch, can be imported
from a source checkout. The torch-side modules are :mod:`.rule` (the description and its files),
:mod:`.engine` (the rule executed step by step), :mod:`.fidelity` and :mod:`.export` (the ``eprop-l2l export``
command); :mod:`.reader` (numpy, no torch) is the one reader of an export's files, for both sides. The
learning engine's number formats and the differentiable hardware-aware update that meta-training runs through
live with the inner loop (:mod:`eprop_l2l.inner_loop.fixed_point`,
:mod:`eprop_l2l.inner_loop.quantized_update`): the meta-learner imports them, and this layer sits above it.
"""
