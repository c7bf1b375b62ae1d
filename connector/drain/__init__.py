"""CDR delivery: the CDR drainer, the slot loop both drainers share, and the delivery gate."""
