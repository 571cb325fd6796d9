"""reaper: removes dead VOIP guests from Redis, the online list, the auth-service and MongoDB."""

__version__ = "0.1.0"
