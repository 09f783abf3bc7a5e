"""A tally: one write method on a routing key, whose two sides record the order they received each
key's writes in (`server.py`). It is the second service of the order across replicas
(tests/services/tally/test_tally_fleet.py)."""
