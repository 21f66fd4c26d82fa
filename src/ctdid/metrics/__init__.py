"""ctdid.metrics."""
