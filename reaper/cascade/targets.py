"""The services a cascade calls, and the steps each configuration needs."""

from dataclasses import dataclass, field

from reaper.cascade.services import AuthService, GuestStore, UserService
from reaper.core.intents import AUTH, AUTH_ALL, MONGO, MONGO_ALL, TELL, USERS_ALL
from reaper.signaling.servers import Teller


@dataclass
class Targets:
    auth: AuthService
    users: UserService
    mongo: GuestStore
    tell: Teller = field(default_factory=lambda: Teller(None))

    def enabled_steps(self) -> list[str]:
        """The irreversible steps a guest cascade needs with this configuration; tell last."""
        return [s for s, on in ((AUTH, self.auth.enabled), (MONGO, self.mongo.enabled),
                                (TELL, self.tell.enabled)) if on]

    def purge_steps(self) -> list[str]:
        return [s for s, on in ((AUTH_ALL, self.auth.enabled), (USERS_ALL, self.users.enabled),
                                (MONGO_ALL, self.mongo.enabled)) if on]

    def purge_target(self, step: str):
        """The service a purge step calls."""
        return {AUTH_ALL: self.auth, USERS_ALL: self.users, MONGO_ALL: self.mongo}[step]
