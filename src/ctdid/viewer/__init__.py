"""ctdid.viewer."""
