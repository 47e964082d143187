"""DVC stage `simulate`: data/customers.csv, or .parquet with simulate.format: parquet (simulated,
or read from simulate.source). The body is custseg.pipeline.data.simulate_stage."""

from custseg.entrypoint import run_stage
from custseg.pipeline.data import simulate_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(simulate_stage))
