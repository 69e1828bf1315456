"""Peer-group anomaly scoring of provider billing profiles (PyOD detectors, MLflow tracking)."""
