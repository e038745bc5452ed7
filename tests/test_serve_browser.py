"""The served page as a person uses it: `python -m orchestrator serve --model DIR` started as a command, and a
real headless Chromium on its page: pick a photo, press Analyse, read each attribute's score and decision
(the same as `predict` writes), ask for a Grad-CAM, see a bad file's one-sentence refusal on the page; then
closing its terminal (SIGHUP) stops the command cleanly, as Ctrl-C does in tests/test_cluster.py. Skipped
where no Chromium is installed (`.ci/run` installs it)."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from browser import Chromium, needs_browser
from serve_fixtures import serve_command

pytestmark = [pytest.mark.ray, needs_browser]

ROWS = "Array.from(document.querySelectorAll('#results tr')).map(r => Array.from(r.cells).map(c => c.textContent))"


def test_a_person_uploads_a_photo_and_sees_the_analysis_then_closes_the_terminal(exported, celeba_trial, tmp_path):
    from orchestrator.predict import run_predict

    photo = sorted((Path(celeba_trial["root"]) / "img_align_celeba").glob("*.jpg"))[0]
    run_predict(exported[0], photo, tmp_path / "predicted")
    expected = pd.read_csv(tmp_path / "predicted" / "predictions.csv").iloc[0]
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("words, not pixels")

    with serve_command("--model", str(exported[0]), stop=signal.SIGHUP) as url, Chromium(tmp_path / "profile") as page:
        page.open(url)
        page.wait_for("document.getElementById('info').textContent.includes('40 outputs')")
        page.choose_files("#images", [photo])
        page.evaluate("document.querySelector('#upload button').click()")
        page.wait_for("document.getElementById('results').dataset.done === '1'")
        rows = page.evaluate(ROWS)
        shown = {name: (score, decision) for name, score, _, decision in rows}
        assert len(shown) == 40
        for name, (score, decision) in shown.items():
            assert float(score) == pytest.approx(expected[f"score/{name}"], abs=1e-3), name
            assert decision == ("yes" if expected[f"label/{name}"] == 1 else "no"), name

        page.evaluate("document.querySelector('.output').value = 'Smiling'; document.querySelector('.gradcam').click()")
        page.wait_for("document.querySelector('.cam img').naturalWidth === 256")
        assert page.evaluate("document.querySelector('.cam img').alt") == "Grad-CAM of Smiling"

        page.choose_files("#images", [not_a_photo])
        page.evaluate("document.querySelector('#upload button').click()")
        error = page.wait_for("document.getElementById('error').textContent")
    assert "notes.jpg" in error and "not a readable image" in error and "\n" not in error
