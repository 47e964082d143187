"""DVC stage `monitor`: the scored rows recorded in data/scored/ against the served version's
training data; metrics/monitor.json and the verdict (too few rows: "no data", exit 0).
The body is custseg.monitoring.check.monitor_stage."""

from custseg.entrypoint import run_stage
from custseg.monitoring.check import monitor_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(monitor_stage))
