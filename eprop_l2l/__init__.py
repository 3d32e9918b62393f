"""eprop_l2l: learning-to-learn with online e-prop in recurrent spiking networks (see README.md, docs/)."""


def _version() -> str:
    """The installed distribution's version; in a source checkout that is not installed, the one pyproject.toml
    declares (``0+unknown`` when neither is found)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eprop_l2l")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.exists() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
