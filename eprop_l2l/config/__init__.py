"""The run configuration: the typed schema every key lives in (``schema``), what ``configs/`` offers
(``catalog``) and Hydra's composition of a run's configuration onto the schema (``compose``). It knows keys and
their types; turning a configuration into library objects is ``runs.build``'s."""
