"""The weights store (service.py) and fetching published files into it (pull.py)."""
