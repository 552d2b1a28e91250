"""What the seed's UI needed, through the drop-in against a real ``runguard serve``: a double
submit answered with the first run's result, a second tab reading the running job's
progress, and a cancel the job learns of while it keeps the slot."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runguard.client import run_guard
from runguard.client.run_guard import RunNotFound, RunRejected
from tests.conftest import Served

ROUTE = "/generate-sse"


def test_a_double_submit_carries_the_first_runs_result(drop_in: Callable[..., Served]) -> None:
    """end_run with an outcome and result; the same submission again is "duplicate" with both."""
    drop_in("--dedup-window", "60")
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    run_guard.end_run("op-1", outcome="succeeded", result={"batch": "/out/2026-12-01/17"})

    with pytest.raises(RunRejected) as caught:
        run_guard.begin_run("op-2", ROUTE, {"prompt": "cats"})

    rejected = caught.value
    assert rejected.reason == "duplicate"
    assert rejected.earlier_state == "ended"
    assert rejected.earlier_outcome == "succeeded"
    assert rejected.earlier_result == {"batch": "/out/2026-12-01/17"}


def test_a_second_tab_reads_the_running_jobs_progress(drop_in: Callable[..., Served]) -> None:
    """report_progress from the job; get_run of current_run() shows it to anybody."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})

    asked = run_guard.report_progress("op-1", 0.4, "frame 40 of 100")

    assert asked is False
    running = run_guard.current_run()
    assert running == "op-1"
    run = run_guard.get_run(running)
    assert run.state == "running"
    assert run.progress is not None
    assert (run.progress.fraction, run.progress.message) == (0.4, "frame 40 of 100")


def test_cancel_run_is_learned_by_the_job_which_then_frees_the_slot(
    drop_in: Callable[..., Served],
) -> None:
    """cancel_run keeps the slot; the job's next report says stop; its end_run frees the slot."""
    drop_in()
    run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})

    reply = run_guard.cancel_run("op-1", reason="user pressed stop")

    assert reply.run.cancel_requested
    assert run_guard.current_run() == "op-1"  # the job still runs: the slot stays held
    assert run_guard.cancel_requested("op-1")
    assert run_guard.report_progress("op-1", 0.5) is True
    run_guard.end_run("op-1", outcome="cancelled")
    assert run_guard.current_run() is None
    assert run_guard.get_run("op-1").outcome == "cancelled"


def test_the_old_calls_work_unchanged(drop_in: Callable[..., Served]) -> None:
    """begin_run / end_run(operation_id) / current_run behave as the seed's did."""
    drop_in()
    run = run_guard.begin_run("op-1", ROUTE, {"prompt": "cats"})
    assert run.operation_id == "op-1"
    run_guard.end_run("op-1")
    run_guard.end_run("op-1")
    assert run_guard.current_run() is None
    assert run_guard.get_run("op-1").outcome is None


def test_progress_of_a_run_this_process_did_not_begin_is_refused(
    drop_in: Callable[..., Served],
) -> None:
    """report_progress of somebody else's run raises ValueError; get_run of nothing, RunNotFound."""
    drop_in()
    with pytest.raises(ValueError, match="not a run this process began"):
        run_guard.report_progress("op-9", 0.5)
    with pytest.raises(RunNotFound):
        run_guard.get_run("op-9")
