"""ctdid.sim."""
