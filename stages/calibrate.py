"""DVC stage `calibrate`: the judge's calibration table (metrics/calibration.json) from the labeled
pairs of eval/calibration.yaml, re-derived from the committed judge replies with no judge call
while prompts and judge are unchanged. The body is
custseg.evaluation.calibration_report.calibrate_stage.
"""

from custseg.entrypoint import run_stage
from custseg.evaluation.calibration_report import calibrate_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(calibrate_stage))
