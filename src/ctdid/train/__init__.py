"""ctdid.train."""
