"""Training lifecycle: data, features, train, evaluate, register; one CLI per stage."""
