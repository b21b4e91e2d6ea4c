"""End-to-end tests: whole Idios stacks started as processes, under hostile input, faults and partitions."""
