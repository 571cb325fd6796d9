"""The cascade: the intents the sweep wrote, run to the end — the online entry, the
auth-service and user-service calls, the MongoDB delete, the socket.io tell — retried with
backoff behind circuit breakers, settled, or moved to the dead letters. The service clients live
here too."""
