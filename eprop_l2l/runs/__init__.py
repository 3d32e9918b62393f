"""Running meta-training for real: builders, run directories (training, evaluation), checkpoints, the training
session (signals, time budget, logging), distributed execution and tracking; the rule comparison, the
evaluation table and plots. The library below (cells, inner_loop, meta) never imports it; the commands
(:mod:`eprop_l2l.commands`) sit above it."""
