"""DVC stage `export`: register the model as `candidate`; promote it if the gate passes.
The body is custseg.pipeline.export.export_stage."""

from custseg.entrypoint import run_stage
from custseg.pipeline.export import export_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(export_stage))
