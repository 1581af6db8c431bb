"""The `tidings` command: runs any service, or the whole system with `tidings up`."""
