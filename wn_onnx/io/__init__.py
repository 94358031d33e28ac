"""Loading: models (with their batch axis and output), data files, bundled datasets, bounded reads."""
