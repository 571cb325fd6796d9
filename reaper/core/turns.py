"""The scheduled jobs by name, and why the gate let a job's turn go by: the words the scheduler,
/healthz, the metrics and the logs share."""

SWEEP, CLEANUP, CASCADE = "sweep", "cleanup", "cascade"
PAUSED, STANDBY = "paused", "standby"  # why the gate refused a job
