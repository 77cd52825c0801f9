"""Crash tests: `roost serve` as a real process, killed with SIGKILL and started again on the same data."""
