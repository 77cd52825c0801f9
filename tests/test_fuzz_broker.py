"""The broker fuzzer's short, bounded run (issue 14): a few random packet sequences from several raw clients
against a real `roost serve`, replaying first every failure that a long run (`python -m bench.fuzz_broker`)
kept in bench/fuzz_db/. It asserts what bench/fuzz_broker.py checks after every step: the process is up
and logged no internal error, a well-behaved client's PINGREQ is answered, and RSS stays within idle + 64 MB.
"""

from __future__ import annotations

from bench.fuzz_broker import fuzz, fuzzed_roost, suite_database


def test_random_packet_sequences_leave_the_broker_serving() -> None:
    with fuzzed_roost() as broker:
        target = fuzz(broker, examples=12, steps=25, database=suite_database())
    assert target.steps > 0
