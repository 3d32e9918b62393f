"""Hydra composition of a run's configuration from ``configs/`` (the package's ``eprop_l2l/configs``) and
command-line overrides, onto the structured schema of :mod:`.config`; multirun sweeps expanded with Hydra's
own override grammar (``optim.lr=1e-3,3e-3 model.n_rec=range(100,300,100)``).

Every failure — unknown key, wrong type, unknown preset, malformed override — becomes a one-line
:class:`~eprop_l2l.errors.ConfigError` naming the key, raised before anything is computed.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from ..messages import cut, shown
from .catalog import CONFIG_DIR
from .schema import TrainConfig

SCHEMA = "train_schema"
MAX_JOBS = 256  # runs one multirun command may expand to (each is validated before the first one starts)
MAX_OVERRIDE = 4000  # characters of one override (Python refuses to parse longer integers anyway)
ConfigStore.instance().store(name=SCHEMA, node=TrainConfig)


def config_error_line(err: Exception) -> ConfigError:
    """Hydra's and OmegaConf's messages span several lines (full_key, object_type, hints): keep the key and
    the first line."""
    key = getattr(err, "full_key", None)
    text = str(getattr(err, "msg", None) or err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = err.__cause__ or err.__context__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return config_error_line(cause)
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if not key and match:
        key = match.group(1)
    missing = re.search(r"Could not find '([a-z_]+)/", text)
    if missing:  # an unknown option of a config group (experiment=nope)
        key = missing.group(1)
    unparsable = re.match(r"LexerNoViableAltException\W*(.*)", text)
    if unparsable:  # a character the override grammar has no token for (control characters, ...)
        return ConfigError("overrides", f"cannot parse {shown(unparsable.group(1) or text)} (key=value; quote "
                           "values with spaces or special characters: key='a b'; control characters are not allowed)")
    return ConfigError(key or "overrides", re.sub(r"\s+", " ", text))


def override_key(override: str) -> str:
    """The key an override sets (``a.b`` of ``+a.b=1``, ``group`` of ``group@pkg=x``)."""
    return re.split(r"[=@]", override.lstrip("+~"), maxsplit=1)[0].strip()


def is_launcher_override(override: str) -> bool:
    """A multirun's launcher (``hydra/launcher=NAME``) or one of its settings (``hydra.launcher.<key>=value``):
    :mod:`.launcher`."""
    key = override_key(override) if isinstance(override, str) else ""
    return key == "hydra/launcher" or key.startswith("hydra.launcher.")


def check_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """Overrides Hydra would accept but eprop-l2l would silently ignore: Hydra's own settings (``hydra.run.dir``,
    ...) — eprop-l2l composes with Hydra, the run directory is ``run.dir``; a multirun's launcher (``-m
    hydra/launcher=...``) is taken off its overrides before they get here."""
    for override in overrides:
        if not isinstance(override, str):
            raise ConfigError("overrides", f"expected key=value strings, got {shown(override)}")
        key = override_key(override)
        if len(override) > MAX_OVERRIDE:
            raise ConfigError(cut(key, 60) or "overrides", f"an override of {len(override):,} characters (at most "
                              f"{MAX_OVERRIDE:,}): {shown(override)}")
        if is_launcher_override(override):
            raise ConfigError(key, "a launcher runs the jobs of a multirun: add -m (eprop-l2l train -m "
                              "hydra/launcher=joblib ...)")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(key, "Hydra's own settings are not used by eprop-l2l (it only composes the "
                              "configuration): set the run directory with run.dir=..., sweep with -m, choose a "
                              "multirun's launcher with hydra/launcher=NAME")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed configuration (typed, struct mode) for ``overrides``."""
    check_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="eprop-l2l"):
            cfg = compose(config_name="train", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise config_error_line(err) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # conversions inside Hydra/OmegaConf
        raise ConfigError("overrides", f"cannot use {shown(' '.join(overrides), 120)}: "
                          f"{shown(str(err).splitlines()[0] if str(err) else type(err).__name__, 120)}") from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


def to_config(cfg: DictConfig) -> TrainConfig:
    try:
        # a plain container first: keys added with Hydra's `+key=` must meet the schema too
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), plain))
    except OmegaConfBaseException as err:
        raise config_error_line(err) from None


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    return to_config(compose_config(overrides))


def config_from_yaml(path: str | Path) -> TrainConfig:
    """A run directory's stored ``config.yaml``, validated against the schema."""
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # OSError, yaml's ParserError/ScannerError, OmegaConf's errors
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(str(path), f"unreadable ({shown(detail, 120)}); restore it from the run's records or "
                          "choose another run directory") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(str(path), "not a configuration (a mapping of sections)")
    try:
        return to_config(loaded)
    except (OSError, OmegaConfBaseException) as err:
        raise ConfigError(str(path), re.sub(r"\s+", " ", str(err).splitlines()[0] if str(err) else repr(err))) \
            from None


def expand_sweep(overrides: list[str] | tuple[str, ...]) -> list[list[str]]:
    """Multirun: the Cartesian product of the sweep overrides (``key=a,b``, ``range(...)``, ``choice(...)``),
    each job as a plain override list, in Hydra's order (the first sweep key varies slowest). At most
    ``MAX_JOBS`` jobs: a larger sweep is refused before anything is expanded or run."""
    check_overrides(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise config_error_line(err) from None
    axes, total = [], 1
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            values = list(itertools.islice(override.sweep_string_iterator(), MAX_JOBS + 1))
            if not values:
                raise ConfigError(key, f"the sweep {shown(override.input_line)} has no values")
            axes.append([f"{key}={value}" for value in values])
        else:
            axes.append([override.input_line])
        total *= len(axes[-1])
        if total > MAX_JOBS:
            raise ConfigError(key, f"the sweep expands to more than {MAX_JOBS} runs (at most {MAX_JOBS} per "
                              "command): split it into several commands")
    return [list(job) for job in itertools.product(*axes)]


def to_yaml(config: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
