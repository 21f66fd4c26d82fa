"""ctdid.core."""
