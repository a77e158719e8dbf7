"""The resilience report's arithmetic, on made-up answers."""

from __future__ import annotations

from reslib import Response, Traffic, bad_answers, parse_time, pct, recovery


def answer(sent: float, status: int, body: dict[str, object] | None = None) -> Response:
    return Response(sent, 0.01, status, body if body is not None else {"error": "x"})


class Recorded(Traffic):
    """A Traffic that only holds the given answers (never started)."""

    def __init__(self, responses: list[Response]) -> None:
        super().__init__("http://127.0.0.1:9/", rate=1, max_seconds=1)
        self.responses = responses


def test_recovery_is_zero_when_nothing_failed() -> None:
    assert recovery(Recorded([answer(1, 200), answer(2, 200)]), since=0) == 0.0


def test_recovery_runs_to_the_first_success_after_the_last_failure() -> None:
    t = Recorded([answer(10, 200), answer(11, 502), answer(12, 200), answer(13, 503), answer(14, 200)])
    assert recovery(t, since=11) == 3


def test_bad_answers_keeps_only_unexpected_failures() -> None:
    ok, expected, timeout, wrong_code, not_json = (
        answer(1, 200),
        answer(2, 503),
        Response(3, 3.0, 0, None),
        answer(4, 500),
        Response(5, 0.01, 503, None),
    )
    found = bad_answers([ok, expected, timeout, wrong_code, not_json], (502, 503))
    assert found == [timeout, wrong_code, not_json]


def test_pct_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 50) == 51.0
    assert pct(values, 99) == 99.0
    assert pct(values, 100) == 100.0
    assert pct([], 50) == 0.0


def test_parse_time_reads_dockers_nanosecond_stamps() -> None:
    assert parse_time("1970-01-01T00:00:10.5Z") == 10.5
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert abs(parse_time("2026-11-26T13:00:00.123456789Z") - 1795698000.123456789) < 1e-6
