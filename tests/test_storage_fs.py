"""The one storage filesystem factory (trainables/storage_fs.py) against a real S3 API on loopback:
endpoint and credentials from the AWS environment, bounded retries that ride out a short outage and
survive pickling, one-line errors after them, and no credential in a URI or a pickle. No Ray."""

from __future__ import annotations

import pickle
import threading

import pyarrow.fs as pafs
import pytest

from s3_server import SECRET_KEY, access_log
from trainables import storage_fs
from trainables.errors import UserError


@pytest.fixture
def bucket(s3_server):
    return s3_server.create_bucket("unit-store")


@pytest.fixture
def outage(s3_server):
    """Stops the server; whatever the test does, it is started again (same port, same buckets)."""
    s3_server.stop()
    yield s3_server
    if not s3_server.up():
        s3_server.start()


def test_backoffs_add_up_to_at_most_the_budget():
    for budget in (0.5, 3, 60, 600):
        attempts = storage_fs.max_attempts(budget)
        assert storage_fs._BASE_DELAY_S * (2 ** attempts - 2) <= budget
        assert storage_fs._BASE_DELAY_S * (2 ** (attempts + 1) - 2) > budget  # and it uses the budget
    assert storage_fs.max_attempts(0) == 1


def test_s3_uri_takes_the_endpoint_from_the_environment_and_pickles_without_credentials(s3_server, bucket):
    fs, path = storage_fs.resolve(f"s3://{bucket}/x/file.txt")
    assert path == f"{bucket}/x/file.txt" and isinstance(fs, pafs.S3FileSystem)
    with fs.open_output_stream(path) as out:
        out.write(b"hello")
    shipped = pickle.dumps(fs)  # what Ray puts in tuner.pkl and sends to every worker
    assert SECRET_KEY.encode() not in shipped
    again = pickle.loads(shipped)
    assert isinstance(again, storage_fs.RetryingS3FileSystem)
    with again.open_input_stream(path) as f:  # the credentials came from this process's environment
        assert f.read() == b"hello"
    assert storage_fs.ray_storage(f"s3://{bucket}/runs")[0] == f"{bucket}/runs"
    assert storage_fs.ray_storage("/tmp/runs") == ("/tmp/runs", None)


@pytest.mark.parametrize("uri", [f"s3://KEY:{SECRET_KEY}@bucket/runs",
                                 f"s3://bucket/runs?access_key=KEY&secret_key={SECRET_KEY}&region=eu-west-1",
                                 f"s3://bucket/runs?session_token={SECRET_KEY}"])
def test_credentials_in_an_s3_uri_are_refused_without_showing_them(uri):
    with pytest.raises(UserError) as caught:
        storage_fs.resolve(uri)
    assert SECRET_KEY not in str(caught.value) and "AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert str(caught.value).startswith("s3://bucket/runs")


def test_an_s3_uri_without_credentials_keeps_its_options():
    assert storage_fs.without_credentials("s3://bucket/runs?region=eu-west-1&scheme=http") == \
        "s3://bucket/runs?region=eu-west-1&scheme=http"


def test_a_short_outage_is_ridden_out_by_the_retries(s3_server, bucket, outage, monkeypatch):
    monkeypatch.setenv(storage_fs.STORE_RETRY_ENV, "30")  # a 1 s outage is well inside it
    fs, _ = storage_fs.resolve(f"s3://{bucket}/outage.txt")
    fs = pickle.loads(pickle.dumps(fs))  # as a worker gets it: the retries must survive the trip
    result: dict = {}

    def read():
        try:
            result["info"] = fs.get_file_info(f"{bucket}/missing")
        except OSError as err:
            result["error"] = err

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=1.0)  # the outage lasts this long, with the request retrying through it
    assert reader.is_alive(), f"the request gave up while the store was down: {result}"
    s3_server.start()
    reader.join(timeout=60)
    assert "error" not in result and result["info"].type == pafs.FileType.NotFound


def test_after_the_bounded_wait_a_shard_read_is_one_line_naming_the_uri(s3_server, bucket, outage, monkeypatch):
    from trainables.data.shards import load_metadata

    monkeypatch.setenv(storage_fs.STORE_RETRY_ENV, "0.5")
    with pytest.raises(UserError) as caught:
        load_metadata(f"s3://{bucket}/shards")
    text = str(caught.value)
    assert text.startswith(f"cannot read s3://{bucket}/shards/metadata.json: ") and "\n" not in text
    assert "connect" in text.lower()


def test_workers_of_a_cluster_get_the_aws_environment_only():
    from orchestrator.cluster import store_env

    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_ENDPOINT_URL": "http://h:9",
           "FACE_ORCHESTRATOR_STORE_RETRY_S": "10", "HOME": "/root", "MLFLOW_TRACKING_URI": "http://x"}
    assert store_env(env) == {k: v for k, v in env.items() if k.startswith(("AWS_", "FACE_"))}


def test_an_unreadable_checkpoint_is_one_line_and_a_tag_not_a_crash(s3_server, bucket, outage, monkeypatch,
                                                                   tmp_path, capsys):
    from orchestrator.report import log_trial_files
    from orchestrator.tracking import Tracking
    from trainables.tasks import get_task

    monkeypatch.setenv(storage_fs.STORE_RETRY_ENV, "0.5")
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracking.client.create_run(tracking.experiment_id("store-down")).info.run_id
    checkpoint = f"{bucket}/runs/sweep/train_runs/train-1/checkpoint_000"
    log_trial_files(tracking, get_task("attributes"), run_id, {}, checkpoint, storage=f"s3://{bucket}/runs/sweep")
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and f"cannot read the checkpoint s3://{checkpoint} (" in printed[0], printed
    tags = tracking.client.get_run(run_id).data.tags
    assert tags["checkpoint"] == checkpoint  # export --run finds the checkpoint by it once the store is back
    assert tags["checkpoint_files"].startswith(f"cannot read the checkpoint s3://{checkpoint}")


def test_rays_failed_state_saves_become_one_line(capsys):
    import logging

    from orchestrator import store_outage

    line = store_outage.install("s3://bucket/runs/sweep")
    log = logging.getLogger("ray.train._internal.storage")
    error = OSError("When testing for existence of bucket 'bucket': AWS Error NETWORK_CONNECTION during HeadBucket "
                    "operation: curlCode: 7, Could not connect to server; Details: Failed to connect")
    for _ in range(3):  # Tune tries every few seconds while the store is down
        record = log.makeRecord(log.name, logging.ERROR, __file__, 1, "Caught exception when creating directory at "
                                "(fs, bucket/runs/sweep):", (), (OSError, error, None))
        assert line.filter(record) is False
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "store  s3://bucket/runs/sweep does not answer (AWS Error NETWORK_CONNECTION" in printed[0]
    other = log.makeRecord(log.name, logging.ERROR, __file__, 1, "something else", (), None)
    assert line.filter(other) is True  # what is not the store's failure keeps Ray's own record
    assert all(any(f is line for f in logging.getLogger(n).filters) for n in store_outage.RAY_STORAGE_LOGGERS)


def test_a_whole_file_is_one_request_to_s3(s3_server, bucket):
    """A checkpoint the driver reads whole (export, the sweep's model) is one GET, not one per 256 KiB chunk
    of pyarrow's stream reads: 180 for a checkpoint's 45 MB of ResNet-18 weights, each a round trip to the store."""
    data = bytes(range(256)) * (12 * 1024 + 7)  # a little over 3 MiB
    fs, path = storage_fs.resolve(f"s3://{bucket}/ckpt/model.pt")
    with fs.open_output_stream(path) as out:
        out.write(data)
    with access_log() as requests:
        assert storage_fs.read_all(fs, path) == data
    gets = [line for line in requests if "GET /" in line and "model.pt" in line]
    assert len(gets) == 1, requests
