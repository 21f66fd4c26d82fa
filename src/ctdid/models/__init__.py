"""ctdid.models."""
