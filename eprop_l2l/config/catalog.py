"""What ``configs/`` offers: the config groups (``experiment``, ``task``, ``model``, ``error_module``, ``inner``),
their options with a one-line description each (the first comment line of each YAML file), and a check that
every ``group=option`` override names an existing option, before Hydra composes anything."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from ..errors import require_choice

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def description(path: Path) -> str:
    """The first comment line of a YAML file that is not a Hydra directive (``# @package ...``)."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and not text.lstrip("# ").startswith("@"):
            return text.lstrip("# ").strip()
        if text and not text.startswith("#"):
            break
    return ""


def defaults(config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """The default option of each group (``train.yaml``'s defaults list)."""
    return dict(re.findall(r"^\s*-\s*(\w+):\s*(\w+)\s*$", (config_dir / "train.yaml").read_text(), re.M))


def config_groups(config_dir: Path = CONFIG_DIR) -> dict[str, dict[str, str]]:
    """``{group: {option: description}}``, experiment presets first, options sorted."""
    groups = sorted((p for p in config_dir.iterdir() if p.is_dir()), key=lambda p: (p.name != "experiment", p.name))
    return {g.name: {f.stem: description(f) for f in sorted(g.glob("*.yaml"))} for g in groups}


def describe(config_dir: Path = CONFIG_DIR, width: int = 100) -> str:
    """The groups and their options as help text (``group=option  description``, defaults marked)."""
    chosen = defaults(config_dir)
    lines = ["presets and config groups (choose one option per group, e.g. experiment=tiny model=alif):"]
    for group, options in config_groups(config_dir).items():
        lines.append(f"  {group}=" + ("  (presets: sizes and meta-optimisation)" if group == "experiment" else ""))
        for option, text in options.items():
            mark = " [default]" if chosen.get(group) == option else ""
            lines += textwrap.wrap(text + mark, width, initial_indent=f"    {option:<17}", subsequent_indent=" " * 21)
    lines.append("every key, its type and default: eprop_l2l/config/schema.py; print a composition with --cfg")
    return "\n".join(lines)


def check_group_options(overrides: list[str] | tuple[str, ...], config_dir: Path = CONFIG_DIR) -> None:
    """A ``group=option`` override with an unknown option raises a one-line ConfigError naming the available
    options (``experiment: unknown value 'nope' (choose from cpu, demo, ...)``). Sweeps (``a,b``) are checked
    option by option; dotted keys (``model.n_rec=...``) are left to the schema."""
    groups = config_groups(config_dir)
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in groups or value.startswith(("range(", "choice(", "glob(")):
            continue
        for option in value.split(","):
            require_choice(key, option.strip(), tuple(groups[key]))
