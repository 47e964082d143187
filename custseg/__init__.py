"""Customer segmentation MLOps: the shared, importable core of stages/, app/ and eval/."""
