"""The sweep: read the records and the users:online entries page by page, judge each guest,
take the dead ones out of Redis (each with its cascade's intent, in one script), and report
what it did."""
