"""Shared TFDV helpers of the data-validation steps (StatisticsGen, SchemaGen, ExampleValidator)
and of anything else that computes or compares statistics (e.g. serving-log monitoring)."""
