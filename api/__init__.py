"""The FastAPI backend: routes, dependencies, errors, metrics, retrain trigger."""
