"""DVC stage `params`: check params.yaml as a whole before any stage runs.

Every stage depends on this stage's marker file, so DVC runs the check first and stops on a bad
file before it removes or rewrites any output. The marker's content never changes, so a valid
edit reruns only the stages whose own params changed.
"""

from __future__ import annotations

import re

import yaml

from custseg.config import check_params_file
from custseg.entrypoint import run, stage_parser
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


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__.splitlines()[0]).parse_args(argv)

    def body() -> None:
        text = DVC_YAML.read_text()
        dvc_params = tracked_params(yaml.safe_load(text)) + interpolated_params(text)
        check_params_file(args.params, dvc_params)
        write_text_atomic(PARAMS_CHECKED, "params.yaml is valid\n")
        print(f"params: {args.params} is valid")

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
