"""The Hydra launcher that runs the jobs of a multirun: an option of Hydra's ``hydra/launcher`` config group
(``basic``: one after the other in this process, the default; ``joblib``: parallel local processes;
``submitit_local`` / ``submitit_slurm``: through submitit, on this machine or as a SLURM job array), with its
settings ``hydra.launcher.<key>=value``. The launchers are Hydra's own plugins (``joblib`` and ``submitit_*``:
``pip install 'eprop_l2l[launchers]'``); eprop-l2l expands and validates the sweep itself
(:func:`.compose.expand_sweep`) and hands a launcher only jobs that passed.

Every job is composed by Hydra (in the process the launcher starts it in) with these settings of Hydra's own,
which make Hydra write nothing: its output directory is the multirun directory (``run.dir``), without a ``.hydra/``
record or log files (the run directories are eprop-l2l's record).
"""

from __future__ import annotations

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, RunMode
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from ..messages import shown
from .catalog import CONFIG_DIR
from .compose import config_error_line, is_launcher_override, override_key

GROUP = "hydra/launcher"
DEFAULT = "basic"
LOCAL = ("basic", "joblib", "submitit_local")  # launchers whose jobs run on this machine
PLUGINS = "pip install 'eprop_l2l[launchers]'"
HYDRA_SETTINGS = ("hydra.sweep.dir=${run.dir}", "hydra.sweep.subdir=''", "hydra.output_subdir=null",
                  "hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.job.chdir=false")


def split_launcher(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the launcher's overrides, the run configuration's)."""
    launcher = [o for o in overrides if is_launcher_override(o)]
    return launcher, [o for o in overrides if not is_launcher_override(o)]


def launcher_name(launcher_overrides: list[str]) -> str:
    """The ``hydra/launcher`` option chosen (the last one given), else ``basic``."""
    names = [o.split("=", 1)[1].strip() for o in launcher_overrides if override_key(o) == GROUP and "=" in o]
    return names[-1] if names else DEFAULT


def instantiate_launcher(launcher_overrides: list[str], first_job: list[str], task_function) -> Launcher:
    """The launcher instantiated by Hydra's plugin mechanism from ``hydra/launcher`` and its settings, set up to
    run ``task_function`` on jobs composed from the package's ``configs/train.yaml``; an unknown launcher or
    setting is a one-line :class:`~eprop_l2l.errors.ConfigError`. ``first_job`` (one job's overrides) composes the
    multirun's own configuration (its ``run.dir`` is the launcher's sweep directory)."""
    name = launcher_name(launcher_overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="eprop-l2l"):
            hydra = GlobalHydra.instance().hydra
            options = hydra.config_loader.get_group_options(GROUP)
            if name not in options:
                raise ConfigError(GROUP, f"unknown launcher {shown(name)} (installed: {', '.join(sorted(options))}; "
                                  f"joblib, submitit_local and submitit_slurm come with {PLUGINS})")
            overrides = [*launcher_overrides, *HYDRA_SETTINGS, *first_job]
            config = hydra.compose_config("train", overrides, run_mode=RunMode.MULTIRUN)
            from hydra._internal.callbacks import Callbacks  # Hydra's own (what its multirun passes a launcher)

            context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(config))
            return Plugins.instance().instantiate_launcher(hydra_context=context, task_function=task_function,
                                                           config=config)
    except (HydraException, OmegaConfBaseException) as err:
        raise config_error_line(err) from None
    except ImportError as err:  # the plugin's config is installed but not what it imports (joblib, submitit)
        raise ConfigError(GROUP, f"{name}: {shown(str(err), 100)}; {PLUGINS}") from None
    finally:
        GlobalHydra.instance().clear()
