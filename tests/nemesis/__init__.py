"""A seeded nemesis for MQTTReplicate (issue 19, item 7): scripts/nemesis.

A primary weewxd and four secondaries under weewxd (SQLite on a small tmpfs, MariaDB, one
over a Mosquitto bridge, one that joins in the middle) replicate while a plan drawn from the
seed injects a fault every few seconds: kill -9, SIGTERM in a catch-up, SIGSTOP, broker
restarts, partitions, trickles, frozen links, a full disk, a locked database, and edits of
the primary's past. Then everything heals, both sides must show mutual knowledge, and every
secondary is compared with the primary row by row, archive and daily summaries.

Modules: schedule (the plan), cluster (what runs), faults (injecting them), edits (the
primary's past changed), check (the comparison), run (one run), __main__ (the command).
"""
