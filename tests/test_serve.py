"""`orchestrator serve` on Ray Serve: each task's model answers POST /predict exactly as in-process `predict`
does, Grad-CAM comes back as a picture, every bad request is a 4xx with one sentence and the server
keeps serving, and the command's own mistakes are one line. One Serve instance serves every model of
this module, each as its own application (tests/serve_fixtures.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch
from PIL import Image

from fake_images import jpeg, png_claiming
from serve_fixtures import SMALL_LIMIT, fairface_export, post, serving

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def models(exported, celeba_trial, tmp_path_factory, mlflow_uri):
    """{app name: (export folder, a folder of that task's images)}."""
    fairface, root = fairface_export(tmp_path_factory.mktemp("serve-fairface"), mlflow_uri)
    return {"attributes": (exported[0], Path(celeba_trial["root"]) / "img_align_celeba"),
            "fairface": (fairface, root / "val")}


@pytest.fixture(scope="module")
def served(local_ray, models):
    with serving({name: folder for name, (folder, _) in models.items()}) as url:
        yield url


def photos(folder: Path, n: int = 3) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.jpg"))[:n]]


@pytest.mark.parametrize("app", ["attributes", "fairface"])
def test_predict_answers_what_in_process_predict_writes(served, models, app, tmp_path):
    from orchestrator.predict import run_predict
    from trainables import inference
    from trainables.served import ServedModel

    folder, images = models[app]
    sent = photos(images)
    answer = post(f"{served}/{app}/predict", sent)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == app and [i["file"] for i in body["images"]] == [name for name, _ in sent]

    for name, data in sent:
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    run_predict(folder, tmp_path / "in", tmp_path / "out")
    expected = pd.read_csv(tmp_path / "out" / "predictions.csv")
    served_table = pd.DataFrame([i["table"] for i in body["images"]])
    assert list(served_table.columns) == list(expected.columns[1:])
    for column in served_table.columns:
        assert served_table[column].dtype.kind == expected[column].dtype.kind, column  # a 0/1 label stays an int
        if served_table[column].dtype.kind == "f":
            np.testing.assert_allclose(served_table[column], expected[column], atol=1e-5, err_msg=column)
        else:
            assert list(served_table[column]) == list(expected[column]), column

    # The scores are the MLflow LoggedModel's (trainables/served.py), and the sections show them.
    exported = inference.load_exported(folder, device="cpu")
    pipe = exported.pipe
    module = ServedModel(exported.model, pipe.mean, pipe.std, exported.outputs.score_groups(exported.cfg, exported.labels))
    faces = inference.load_faces(exported, [tmp_path / "in" / name for name, _ in sent])
    import torch

    with torch.no_grad():
        want = module(faces.float() / 255).numpy()
    got = np.array([[i["scores"][n] for n in exported.output_names] for i in body["images"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    shown = {item["name"]: item for section in body["images"][0]["sections"] for item in section["items"]}
    assert shown, body["images"][0]["sections"]
    if app == "attributes":
        assert [s["title"] for s in body["images"][0]["sections"]] == ["attributes"]
        assert {n: shown[n]["decision"] for n in exported.output_names} == {
            n: ("yes" if expected[f"label/{n}"][0] == 1 else "no") for n in exported.output_names}
    else:
        assert [s["title"] for s in body["images"][0]["sections"]] == ["race", "gender", "age"]
        predicted = [i["name"] for s in body["images"][0]["sections"] for i in s["items"] if i["decision"]]
        assert predicted == [expected["race"][0], expected["gender"][0], expected["age_bin"][0]]


def test_the_page_and_info_are_served(served, models):
    page = requests.get(f"{served}/attributes/", timeout=30)
    assert page.status_code == 200 and 'name="image"' in page.text and "fetch(\"predict\"" in page.text
    info = requests.get(f"{served}/fairface/info", timeout=30).json()
    assert info["model"] == "fairface" and info["task"] == "fairface" and "race/White" in info["outputs"]
    assert info["decision"] == ""  # no named decision rules: the page says none
    info = requests.get(f"{served}/attributes/info", timeout=30).json()
    assert info["decision"] == "f1_opt"  # the task's default among the export's rules, which the page names
    assert "decisions by '${info.decision}'" in page.text


def test_gradcam_is_a_picture_of_the_chosen_output(served, models):
    sent = photos(models["attributes"][1], 1)
    answer = post(f"{served}/attributes/gradcam", sent, output="Smiling")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as picture:
        assert picture.size == (256, 256)
    wrong = post(f"{served}/attributes/gradcam", sent, output="Smilling")
    assert wrong.status_code == 400 and "Smiling" in wrong.json()["error"]


BAD = {
    "not an image": (lambda: [("notes.txt", b"these are words, not pixels")], {}, 400, "not a readable image"),
    "a decompression bomb": (lambda: [("bomb.png", png_claiming(30_000, 30_000))], {}, 400, "decompression"),
    "over the size limit": (lambda: [("big.jpg", jpeg(3, size=(200, 200), quality=100) * 2)], {}, 413,
                            "limit of 0.0625 MiB"),
    "the field missing": (lambda: [("face.jpg", jpeg(4))], {"field": "photo"}, 400, "no photo in the field 'image'"),
    "a wrong model id": (lambda: [("face.jpg", jpeg(5))], {"model": "someone-else"}, 404,
                         "serves the model 'attributes', not 'someone-else'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_is_one_sentence_and_serving_goes_on(served, models, case):
    make, extra, status, says = BAD[case]
    sent = make()
    if case == "over the size limit":
        assert sum(len(d) for _, d in sent) > SMALL_LIMIT
    answer = post(f"{served}/attributes/predict", sent, **extra)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert says in message and "\n" not in message and message.endswith(".") and message.count(". ") == 0, message
    good = post(f"{served}/attributes/predict", photos(models["attributes"][1], 1))
    assert good.status_code == 200 and len(good.json()["images"]) == 1


def test_a_request_that_is_not_a_form_is_refused(served):
    answer = requests.post(f"{served}/attributes/predict", data=b"{}", headers={"content-type": "application/json"},
                           timeout=30)
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["error"]


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-800:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-800:]
    return lines[0]


def test_the_commands_mistakes_are_one_line_each(tmp_path, exported, celeba_trial):
    import socket

    uri = celeba_trial["uri"]
    with socket.socket() as holder:  # a port already taken, held until every command has answered
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        mistakes = {  # none starts Ray, so they run side by side: each is mostly its imports
            "is not an exported model": ["--model", str(tmp_path / "nothing")],
            "no MLflow run 'abc123'": ["--run", "abc123", "--tracking-uri", uri],
            "no model models:/faces@nobody": ["--model", "models:/faces@nobody", "--tracking-uri", uri],
            f"cannot listen on 127.0.0.1:{port}": ["--model", str(exported[0]), "--port", str(port)],
            "--replicas": ["--model", str(exported[0]), "--replicas", "0"],
        }
        started = {says: subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", *args],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for says, args in mistakes.items()}
        answers = {}
        for says, proc in started.items():
            out, err = proc.communicate(timeout=300)
            answers[says] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    for says, done in answers.items():
        assert says in one_line(done), (says, done.stderr[-800:])
    assert "--port" in one_line(answers[f"cannot listen on 127.0.0.1:{port}"])


def test_models_uri_serves_the_checkpoint_its_logged_model_was_made_from(exported, celeba_trial, tmp_path):
    from orchestrator import logged_model
    from orchestrator.commands.serve import resolve_model
    from orchestrator.tracking import Tracking

    tracking = Tracking(celeba_trial["uri"])
    folder, summary = exported
    chosen = {**summary, "checkpoint": summary["checkpoint"]}
    lines, error = logged_model.publish(tracking, folder, chosen, logged_model.registration("serve-test", None))
    assert error is None, lines
    served_folder, model_id = resolve_model("models:/serve-test@champion", None, celeba_trial["uri"], tmp_path)
    assert model_id == "serve-test@champion"
    # The same tensors (the file's header may list its metadata in another order: compare contents, not bytes).
    from safetensors.torch import load_file

    served, exported_weights = load_file(served_folder / "model.safetensors"), load_file(folder / "model.safetensors")
    assert served.keys() == exported_weights.keys()
    assert all(torch.equal(served[k], exported_weights[k]) for k in served)
    assert json.loads((served_folder / "labels.json").read_text()) == json.loads((folder / "labels.json").read_text())


def test_replicas_that_cannot_start_are_one_line_and_serving_goes_on(served, models):
    """A replica that fails in its constructor (here: weights that are not a safetensors file; on a cluster,
    most often a node that cannot import this package) is one line naming its error, not Serve's traceback;
    the failed application is deleted and the others keep serving."""
    from ray import serve

    from orchestrator.commands.serve import model_files, start
    from trainables.errors import UserError

    files = {**model_files(models["attributes"][0]), "model.safetensors": b"not a tensor file"}
    port = int(served.rsplit(":", 1)[1])
    with pytest.raises(UserError) as failed:
        start(files, "broken", port=port, name="broken", route_prefix="/broken", cpus_per_replica=0.25)
    message = str(failed.value)
    assert message.startswith("the model's replicas failed to start: cannot read ") and "\n" not in message, message
    assert "model.safetensors" in message and message.endswith("export the model again"), message
    assert "broken" not in serve.status().applications
    good = post(f"{served}/attributes/predict", photos(models["attributes"][1], 1))
    assert good.status_code == 200 and len(good.json()["images"]) == 1
