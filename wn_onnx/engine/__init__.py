"""The onnxruntime evaluator of noisy accuracy, split by job (see README "How it works")."""
