"""Recording the clients' calls as the primary answered them, to replay them against a BK build later.

`format.py` is the file (`docs/recording-format.md`).
"""
