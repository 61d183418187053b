"""Models: the registry (labels, input spec, thresholds, weights and their hash) and networks."""
