"""`make bench`: the appliance measured side by side with a reference, in the same run.

The machine is shared and noisy, so no figure stands alone: each is a ratio against, or a pair
with, a reference measured minutes apart on the same cores (nginx for the proxy, pyvips and
Pillow for thumbnails, a byte-discarding Tornado server for uploads, the store's own SQL for
the library). Run it with `make bench` or `.venv/bin/python -m tests.bench`; see `__main__`.
"""
