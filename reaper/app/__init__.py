"""The program: the command line, the daemon and its scheduler, the context that wires the
rooms together for one run, the startup purge and the periodic cleanup, and the one-shot commands
(check, stats, health)."""
