"""What operators see of a running reaper: /healthz, /livez, /readyz and /metrics on the HTTP
endpoint, Prometheus metrics (also for cron runs), systemd's notify protocol, and the process's
own limits."""
