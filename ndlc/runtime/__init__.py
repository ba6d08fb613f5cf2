"""Running compiled programs: buffers, executors and persistent state."""
