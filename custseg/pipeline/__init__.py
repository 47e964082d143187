"""The training pipeline's core: customer data, KMeans segments, the k-sweep chart and the
champion gate. The DVC stages in stages/ call these and do the writing and tracking."""
