"""What `serve` prints: the one line for replicas that cannot start, and the URL of its page wherever the
command runs. On the head (a local Ray, a shell on the head, `ray job submit`) the page is at 127.0.0.1;
elsewhere the URL names the head, whose proxy Serve always runs, and says how to reach a proxy that listens
on the head's loopback only."""

from __future__ import annotations

from orchestrator.commands.serve import page_url


def test_on_the_head_the_page_is_on_loopback_whatever_the_proxy_binds():
    assert page_url("127.0.0.1", 8000, "/", "10.0.0.5", "10.0.0.5") == ("http://127.0.0.1:8000/", "")
    assert page_url("0.0.0.0", 8123, "/", "10.0.0.5", "10.0.0.5") == ("http://127.0.0.1:8123/", "")
    assert page_url("127.0.0.1", 8000, "/faces/", None, "10.0.0.7") == ("http://127.0.0.1:8000/faces/", "")
    assert page_url("::1", 8000, "/", None, "::1") == ("http://[::1]:8000/", "")


def test_away_from_the_head_the_page_names_the_head():
    assert page_url("0.0.0.0", 8000, "/", "10.0.0.5", "10.0.0.9") == ("http://10.0.0.5:8000/", "")
    assert page_url("::", 8000, "/", "fd00::5", "fd00::9") == ("http://[fd00::5]:8000/", "")
    assert page_url("10.0.0.5", 9000, "/", "10.0.0.5", "10.0.0.9") == ("http://10.0.0.5:9000/", "")


def test_a_loopback_proxy_on_a_remote_head_says_how_to_reach_it():
    url, note = page_url("127.0.0.1", 8000, "/", "10.0.0.5", "10.0.0.9")
    assert url == "http://127.0.0.1:8000/"
    assert "loopback of the head, 10.0.0.5" in note and "--host 0.0.0.0" in note and "http://10.0.0.5:8000/" in note
    assert "\n" not in note


def test_a_replicas_error_is_named_and_a_missing_package_says_how_to_ship_it():
    from orchestrator.commands.serve import failure_cause, replicas_failed

    traceback = ("Deploying application faces failed: Failed to update the deployments ['FaceModel'].\n"
                 "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                 "ModuleNotFoundError: No module named 'orchestrator'")
    cause = failure_cause(traceback)
    assert cause == "ModuleNotFoundError: No module named 'orchestrator'"
    said = replicas_failed(cause)
    assert "No module named 'orchestrator'" in said and "--runtime-env" in said and "\n" not in said
    ours = failure_cause("RuntimeError: Traceback\ntrainables.errors.UserError: cannot read m.safetensors: export it")
    assert replicas_failed(ours) == "the model's replicas failed to start: cannot read m.safetensors: export it"
