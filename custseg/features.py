"""The customer features, once: column names, accepted bounds and the CSV headers they may
arrive under. Simulation, training, serving, batch scoring and the charts all take them from here.
"""

from __future__ import annotations

import re

ID = "customer_id"
INCOME = "annual_income"  # k$ a year
SPENDING = "spending_score"  # 1-100
FEATURES = [INCOME, SPENDING]
COLUMNS = [ID, *FEATURES]

# The app's slider ranges, the bounds a batch row must respect and the simulation's default clip.
BOUNDS: dict[str, tuple[float, float]] = {INCOME: (15.0, 140.0), SPENDING: (1.0, 100.0)}
# The Mall Customers data set's headers: `simulate.columns` defaults, accepted in batch uploads,
# and the charts' axis titles.
MALL_HEADERS = {INCOME: "Annual Income (k$)", SPENDING: "Spending Score (1-100)"}


def normalise_header(name: object) -> str:
    """'Annual Income (k$)' → 'annual_income_k'; ' spending_score ' → 'spending_score'."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


# Header spellings accepted for each feature, after normalisation: ours and the Mall data set's.
HEADER_ALIASES = {f: (f, normalise_header(MALL_HEADERS[f])) for f in FEATURES}
