"""Stage 6, monitoring: the pure computations of a monitoring run (drift statistics, data quality,
the HTML report, Prometheus exposition). The step that reads payload logs, resolves a model
version's training reference and records the run is components/monitor/."""
