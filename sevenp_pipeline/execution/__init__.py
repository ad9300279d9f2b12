"""How a run's steps execute: the threaded executor (threads.py) and the cancellation of a
terminated run's running steps (cancellation.py)."""
