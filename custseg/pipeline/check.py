"""DVC stage `params`: params.yaml checked as a whole (every key dvc.yaml tracks or
interpolates) before any other stage runs; every stage depends on its marker."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from custseg.config import check_params_file
from custseg.io import write_text_atomic
from custseg.paths import DVC_YAML, PARAMS_CHECKED


def tracked_params(dvc_yaml: dict) -> list[str]:
    """The params.yaml keys dvc.yaml's stages list (`base.seed`, `train`, ...), in order."""
    keys: list[str] = []
    for spec in (dvc_yaml.get("stages") or {}).values():
        for entry in spec.get("params", []):
            if isinstance(entry, str) and entry not in keys:  # {file: [...]}: another file
                keys.append(entry)
    return keys


def interpolated_params(text: str) -> list[str]:
    """The params.yaml keys dvc.yaml interpolates (`${simulate.format}`): DVC fails on a missing
    one before any stage runs, with its own message."""
    return list(dict.fromkeys(re.findall(r"\$\{\s*([\w.]+)\s*\}", text)))


def check_params_stage(params_path: Path) -> str:
    """Check params.yaml as a whole (every key dvc.yaml tracks or interpolates), then write the
    marker every other stage depends on: DVC stops here on a bad file, before any output."""
    text = DVC_YAML.read_text()
    check_params_file(params_path, tracked_params(yaml.safe_load(text)) + interpolated_params(text))
    write_text_atomic(PARAMS_CHECKED, "params.yaml is valid\n")
    return f"params: {params_path} is valid"
