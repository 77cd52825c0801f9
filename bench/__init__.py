"""Roost's benchmark harness: Roost against Mosquitto, side by side on one machine.

    python -m bench.run [--quick] [--runs 3] [--scenarios fan_in,latency] [--output docs/benchmarks.md]

Layout, bottom-up: `wire` pre-encodes packets with Roost's own codec and frames what comes back; `loadgen`
holds the client workers (each runs in its own process, raw sockets, bounded in count and time);
`brokers` starts a fresh Roost or Mosquitto on a free loopback port and reads its RSS; `scenarios` drives
workers against one broker and returns numbers; `run` alternates brokers, takes medians and writes the
table; `profile` samples Roost with py-spy during fan-in. Nothing here imports the broker's internals
beyond the codec, and nothing sends traffic anywhere but 127.0.0.1.
"""
