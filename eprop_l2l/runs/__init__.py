"""Running meta-training for real: checkpoints, the training session (signals, time budget, logging),
distributed execution, configs and tracking. The library below (cells, inner_loop, meta) never imports it."""
