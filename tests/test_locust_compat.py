"""The Locust internals soak reaches (soak/load/locust_compat.py), against the installed
Locust: a release that moves one fails here, by name, not a multi-day run.

Runs in a child interpreter: importing Locust monkey-patches the standard library with
gevent, which must not happen inside the test process.
"""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from locust import LoadTestShape, User, constant, task
    from locust.env import Environment
    from soak.load import locust_compat as compat

    class Idle(User):
        wait_time = constant(1)

        @task
        def nothing(self):
            pass

    class Shape(LoadTestShape):
        def tick(self):
            return (1, 1)

    options = compat.default_options()
    assert options.enable_rebalancing is False and hasattr(options, "num_users")
    compat.set_worker_report_interval(0.5)
    import locust.runners
    assert locust.runners.WORKER_REPORT_INTERVAL == 0.5

    local = Environment(user_classes=[Idle], shape_class=Shape()).create_local_runner()
    local.start_shape()
    gevent.sleep(0.3)
    compat.stop_shape(local)
    assert local.shape_greenlet is None or local.shape_greenlet.dead
    local.quit()
    local.environment.events.request.fire(
        request_type="turn", name="t", response_time=5.0, response_length=1, exception=None,
        context={},
    )
    from soak.load.webui import TurnOutcome

    local.environment.events.request.fire(
        request_type="turn", name="t", response_time=5.0, response_length=0,
        exception=TurnOutcome("stall"), context={},
    )
    texts = [e.to_dict()["error"] for e in local.environment.stats.errors.values()]
    assert texts == ["stall"], texts  # the web UI's failure text, not a Python repr
    counters = compat.per_second_counters(local.environment.stats)
    assert counters and all(isinstance(c, dict) for c in counters)
    assert isinstance(compat.stats_history(local.environment.stats), list)

    env = Environment(user_classes=[Idle])
    env.parsed_options = options
    master = env.create_master_runner(master_bind_host="127.0.0.1", master_bind_port=0)
    port = compat.master_port(master)
    assert port > 0
    worker_env = Environment(user_classes=[Idle])
    worker = worker_env.create_worker_runner("127.0.0.1", port)
    assert compat.worker_main(worker) is not None
    for _ in range(50):
        if compat.worker_ids(master):
            break
        gevent.sleep(0.1)
    assert len(compat.worker_ids(master)) == 1, compat.worker_ids(master)
    worker.quit()
    master.quit()
    assert compat.version_note() is None, compat.version_note()  # in the tested range
    print("ok")
    """
)


def test_every_locust_internal_soak_uses_is_there_in_the_tested_locust():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
