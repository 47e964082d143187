"""What the tests and the benchmarks share (as numpy.testing does for numpy): project sandboxes
with a real MLflow store, synthetic agent conversations, the app served for a real browser.
The product itself never imports this package."""
