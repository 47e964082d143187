"""Serving the registered champion: resolve and load it (model), the rules every scored value
must pass (validation), score an uploaded CSV (batch), answer REST requests (rest), and draw the
segments (charts). The Streamlit app in app/ renders these."""

# Here, not in rest, so `custseg --help` does not import MLflow and pandas to print them.
DEFAULT_PORT = 5001  # `custseg serve`, beside the MLflow UI's 5000
DEFAULT_MAX_BODY_MB = 10  # ~250,000 customers as dataframe_split JSON
