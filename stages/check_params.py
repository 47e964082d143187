"""DVC stage `params`: check params.yaml as a whole before any stage runs.

Every stage depends on this stage's marker file, so DVC runs the check first and stops on a bad
file before it removes or rewrites any output. The marker's content never changes, so a valid
edit reruns only the stages whose own params changed. The body is
custseg.pipeline.check.check_params_stage.
"""

from custseg.entrypoint import run_stage
from custseg.pipeline.check import check_params_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(check_params_stage))
