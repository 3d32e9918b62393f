"""The commands of ``eprop-l2l``, one module each, over the library: ``train``, ``evaluate``, ``export``,
``compare``, ``plot``, ``table``, ``bench``, ``hardware`` and ``demo`` (``demo-eprop1``). Each holds its command's
entry function (explicit arguments in, an exit code out; output printed); :mod:`eprop_l2l.cli` parses the
command line, dispatches to them and turns their errors into one line and an exit code."""
