"""Customer segmentation MLOps: the one installable package behind the DVC stages (stages/),
the Streamlit app (app/), the agents over Kafka and their evaluation (the `custseg` command)."""
