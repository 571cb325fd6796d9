"""Redis access: the connection (single, Sentinel, Cluster), paged reads, the Lua scripts and the
keys reaper owns (the intents and their schedule, the audit trail, dead letters, the leader lease,
pause, the clock-jump hold). Built on core/; knows nothing of sweeps or cascades."""
