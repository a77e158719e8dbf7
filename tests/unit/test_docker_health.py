"""The health-record printer the suites show when a container is not healthy."""

from docker_health import health_log


def test_names_the_container_its_state_and_each_check() -> None:
    container = {
        "Name": "/prodstack-app-1",
        "State": {
            "Status": "running",
            "Health": {
                "Status": "unhealthy",
                "FailingStreak": 2,
                "Log": [
                    {
                        "Start": "2026-11-29T11:00:00.123456789Z",
                        "End": "2026-11-29T11:00:10.123456789Z",
                        "ExitCode": -1,
                        "Output": "Health check exceeded timeout (10s)\n",
                    },
                    {
                        "Start": "2026-11-29T11:00:30.500000001Z",
                        "End": "",
                        "ExitCode": 1,
                        "Output": "x" * 400,
                    },
                ],
            },
        },
    }
    lines = health_log(container).splitlines()
    assert lines[0] == "== prodstack-app-1: running, health unhealthy, 2 failed in a row"
    assert lines[1] == "   11:00:00.123-11:00:10.123 exit -1: Health check exceeded timeout (10s)"
    assert lines[2] == "   11:00:30.500- exit 1: " + "x" * 300  # the end of a long output only


def test_a_container_without_a_healthcheck() -> None:
    assert health_log({"Name": "/c", "State": {"Status": "exited"}}) == (
        "== c: exited, health None, None failed in a row"
    )
