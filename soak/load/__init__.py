"""The load side: Locust chat users holding WebSocket chats open against targets.

This is the only package that imports locust or gevent. It runs in its own
process (`python -m soak.load`), gevent-patched before anything else, and
writes chat aggregates and anomalies into the run directory.
"""
