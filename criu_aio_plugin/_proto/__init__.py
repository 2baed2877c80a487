"""Generated protobuf modules (built from protos/ by setup.py; never edited by hand)."""
