"""The one gate before every irreversible action, and what it asks: is this a guest id, is the
user live anywhere (its records, its online entry, the last record pass), and does this replica
still lead and is it not paused — at the moment of acting. Built on store/ and core/."""
