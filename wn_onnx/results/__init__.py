"""Results: the fit of a curve, the report model and its JSON schema, the resumable store, figures."""
