"""The Lava back-end: the exported one-shot e-prop rule on Loihi 2's learning engine, simulated by Lava 0.10.0.

Runs in its own CPython 3.10 environment (``make lava-env`` → ``.venv-lava``: numpy and lava-nc, no torch) and
reads only the files of an export (``eprop-l2l export ... --target lava``). Nothing here imports torch or the
package's torch code; this ``__init__`` imports nothing at all.

* :mod:`.run` — the program: ``python -m eprop_l2l.hardware.lava.run DIR --tasks N --precision float|fixed``;
* :mod:`.launcher` — standard library only: finds ``.venv-lava`` and starts the program (the torch-side CLI);
* :mod:`.artefacts` — reading and checking an export directory (numpy);
* :mod:`.network` — the Lava network of one task, its learning rules and number formats;
* :mod:`.procs` — the custom Processes and their ProcessModels (kept in a folder of their own: Lava's compiler
  imports every module in the folder of a Process);
* :mod:`.plants` — the plants that score the movements (two-joint arm, ED-Scorbot): kinematics and metric (numpy);
* :mod:`.report` — fidelity numbers, the readout, the table and the figure (numpy, matplotlib if present).

``docs/lava.md`` describes the mapping, the timing compensation, the number formats and the measured fidelity.
"""
