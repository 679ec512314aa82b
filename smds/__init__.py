"""SM-DS: the Discovery Server of SGP.22 (3.6). SM-DP+s register events for an EID over ES12; the
eUICC's LPA finds them over ES11 at the eUICC's root SM-DS address, without an activation code.

core.py is the sans-IO protocol logic, store.py its SQLite state, server.py the HTTPS edges, cli.py
the ``kinsim smds`` commands.
"""
