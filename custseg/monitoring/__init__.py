"""Drift monitoring: do the customers being scored still look like the champion's training data?"""

# Named here, not in check/simulate, so `custseg --help` does not import SciPy and pandas.
EXPERIMENT = "monitoring"  # the MLflow experiment of monitor runs
DRIFTS = ("none", "income", "new-group", "empty-segment")  # what `--simulate-drift` can do
