"""Chaos harness: autoscaling, kills and restarts under load, with an invariant report (`make chaos`)."""
