"""The sweep: read the records and the users:online entries page by page, judge each guest,
take the dead ones out of Redis (each with its cascade's intent, in one script), and report
what it did. One part per concept: reading, judging (pure), asking, budget, taking (a single
Redis's way or a cluster's, chosen once: redis_kinds), reporting (listeners of the pass's
events); passes and setup put one pass together, sweep runs the whole; seams names where a
test steps in; census counts what a sweep would find, for `reaper stats`."""
