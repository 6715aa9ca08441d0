"""Serving: the model holder (load, warm up, swap atomically, predict)."""
