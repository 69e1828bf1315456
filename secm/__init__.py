"""The shell around the packages: settings, command line, batch pipeline, synthetic data."""
