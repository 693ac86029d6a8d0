"""`brd plan`: what a config needs on a target topology (memory, FLOPs, days), proven by
ahead-of-time compiles of the real steps from this CPU machine."""
