"""DVC stage `train`: sweep k, fit KMeans, track everything in MLflow, write metrics and plots.
The body is custseg.pipeline.train.train_stage."""

from custseg.entrypoint import run_stage
from custseg.pipeline.train import train_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(train_stage))
