"""Weights & Biases tracking of a run: the resolved config, every meta-iteration's record (meta-loss,
pre/post-update MSEs, firing rates, gradient norm, learning rate, iterations per second, skipped steps) and the
evaluation's metrics and figures.

``mode`` comes from the config: ``offline`` (default; the run lands in ``<run dir>/wandb``, upload later with
``wandb sync``), ``online`` or ``disabled`` (tests). Offline never touches the network. Only rank 0 tracks. A
resumed run continues the same W&B run (its id is stored in the run directory).

``online`` never blocks training for long and never loses it: without an API key, when the W&B server cannot be
reached within ``wandb.timeout_s`` (a TCP connection, bounded in a thread, before ``wandb.init``), or when
``wandb.init`` itself fails (its ``init_timeout`` is ``wandb.timeout_s`` too), the run is logged OFFLINE instead
with one warning line on stderr (``eprop-l2l: warning: ...``), to be uploaded later with ``wandb sync``. A W&B
failure in offline mode ends the command with one line (:class:`~.rundir.RunFault`) suggesting
``wandb.mode=disabled``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

from ..messages import one_line, shown, shown_path
from .rundir import RunFault, write_atomic

RUN_ID_FILE = "wandb_run_id"


class Tracker:
    def __init__(self, run, mode: str = "disabled"):
        self.run, self.mode = run, mode  # the mode it runs in (online may have fallen back to offline)

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "iteration"}
        if record.get("seconds"):
            values["iterations_per_second"] = 1.0 / record["seconds"]
        self.run.log(values, step=int(record["iteration"]))

    def log_evaluation(self, summary: dict, figures: list[Path]) -> None:
        if self.run is None:
            return
        import wandb

        for key, value in summary.items():
            if isinstance(value, (int, float)):
                self.run.summary[f"eval/{key}"] = value
        images = {f"eval/{p.stem}": wandb.Image(str(p)) for p in figures if p.exists()}
        if images:
            self.run.log(images)

    @property
    def directory(self) -> str | None:
        return None if self.run is None else self.run.dir

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def _settings(wandb, timeout_s: float):
    for kwargs in ({"console": "off", "x_disable_stats": True, "init_timeout": timeout_s},
                   {"console": "off", "init_timeout": timeout_s}, {"console": "off"}):
        try:  # system-metrics sampling adds a thread per run; older wandb lacks some switches
            return wandb.Settings(**kwargs)
        except (TypeError, ValueError):
            continue
    return None


def warn(message: str) -> None:
    print(f"eprop-l2l: warning: {one_line(message)}", file=sys.stderr, flush=True)


def _has_api_key(wandb, host: str) -> bool:
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    with contextlib.suppress(Exception):  # wandb's own lookup (netrc, settings); internal, may move
        from wandb.sdk.lib import wbauth

        if wbauth.read_netrc_auth(host=host):
            return True
    with contextlib.suppress(Exception):
        import netrc

        return netrc.netrc().authenticators(urlparse(host).hostname or host) is not None
    return False


def _reachable(url: str, timeout_s: float) -> str | None:
    """None when a TCP connection to ``url``'s host opens within ``timeout_s`` (name lookup included, which a
    socket timeout does not bound: it runs in a daemon thread), else the reason."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return f"no server in the W&B base URL {shown(url)}"
    outcome: list[str | None] = []

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return f"no answer from {host}:{port} within wandb.timeout_s={timeout_s:g} s"
    return None if outcome[0] is None else f"cannot reach {host}:{port} ({outcome[0]})"


def _init(wandb, config, run_dir: Path, run_id: str, mode: str):
    import dataclasses

    return wandb.init(project=config.wandb.project, entity=config.wandb.entity, name=config.wandb.name or run_dir.name,
                      group=config.wandb.group, tags=list(config.wandb.tags), mode=mode, dir=str(run_dir), id=run_id,
                      resume="allow", config=dataclasses.asdict(config),
                      settings=_settings(wandb, config.wandb.timeout_s))


def check_available(config) -> None:
    """Before anything is written: W&B tracking needs the wandb package."""
    import importlib.util

    from ..errors import ConfigError

    if config.wandb.mode != "disabled" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("wandb.mode", f"{config.wandb.mode} needs the wandb package: pip install wandb, or set "
                          "wandb.mode=disabled")


def start_tracking(config, run_dir: Path, enabled: bool = True) -> Tracker:
    """A W&B run for ``config`` (a :class:`~.config.TrainConfig`), or a no-op tracker when disabled."""
    if not enabled or config.wandb.mode == "disabled":
        return Tracker(None)
    try:
        import wandb
    except ImportError as err:
        raise RunFault(f"wandb.mode={config.wandb.mode}: the wandb package cannot be imported ({shown(str(err))}); "
                       "pip install wandb, or set wandb.mode=disabled") from None

    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else ""
    if not run_id.isalnum():
        run_id = uuid.uuid4().hex[:12]  # a name, not a draw
        write_atomic(id_file, run_id)
    mode, timeout = config.wandb.mode, config.wandb.timeout_s
    offline = f"logging this run offline to {run_dir / 'wandb'} instead (upload later with wandb sync)"
    if mode == "online":
        host = os.environ.get("WANDB_BASE_URL", "").strip()
        if not host:
            host = "https://api.wandb.ai"
            with contextlib.suppress(Exception):
                host = wandb.Settings().base_url or host
        problem = (None if _has_api_key(wandb, host) else "no W&B API key (set WANDB_API_KEY or run wandb login)") \
            or _reachable(host, timeout)
        if problem:
            warn(f"wandb.mode=online: {problem}; {offline}")
            mode = "offline"
    try:
        return Tracker(_init(wandb, config, run_dir, run_id, mode), mode)
    except Exception as err:  # wandb.errors.Error (CommError, UsageError, AuthenticationError), OSError, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if mode != "online":
            raise RunFault(f"wandb: the {mode} run could not start in {shown_path(run_dir / 'wandb')} "
                           f"({shown(detail, 100)}); set wandb.mode=disabled to train without W&B") from None
    warn(f"wandb.mode=online: wandb.init failed ({shown(detail, 100)}); {offline}")
    with contextlib.suppress(Exception):
        wandb.finish()
    try:
        return Tracker(_init(wandb, config, run_dir, run_id, "offline"), "offline")
    except Exception as err:
        raise RunFault(f"wandb: the offline run could not start either ({shown(str(err).strip()[:200], 100)}); set "
                       "wandb.mode=disabled to train without W&B") from None
