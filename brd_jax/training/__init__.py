"""Student training: optimizer, losses, jitted sharded train step, loop, metrics."""
