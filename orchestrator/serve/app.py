"""The Ray Serve application: one deployment that holds an exported model and answers
  GET /           the page (index.html): upload photos, see the analysis, Grad-CAM one click away;
  GET /info       what is served: the model's id, task, output names and decision policy;
  POST /predict   form field `image`, repeatable -> per photo the task's table, scores and sections (JSON);
                  for a task whose outputs compare a pair (`TaskOutputs.compare`), exactly two photos, and `pair`;
  POST /gradcam   one `image` and an `output` name -> a PNG of the Grad-CAM overlay; for a pair model, exactly two
                  photos -> a PNG of both overlays side by side, each explained by its score against the other.
Each photo of every request goes through `infer`, which `@serve.batch` gathers into one forward pass.
Everything a photo's answer holds comes from `trainables.inference.analyse`, so from the task's own
outputs, as `predict` uses them. A bad request is a 4xx with one sentence (`{"error": ...}`), and the
replica goes on serving.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' `Request` annotations at runtime.
import asyncio
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from orchestrator.serve.uploads import FIELD, MAX_FILES, MAX_UPLOAD_BYTES, BadRequest, read_form, uploaded_images
from trainables.errors import UserError

PAGE = Path(__file__).with_name("index.html")
SEND_A_PHOTO = "send a JPEG or PNG face photo"
api = FastAPI(title="face-orchestrator", docs_url=None, redoc_url=None, openapi_url=None)


class Answer(JSONResponse):
    """A JSON answer written by `json.dumps` directly: FastAPI's own encoder walks every value of a dict it is
    given (a millisecond for 40 attributes, more than the batched forward pass costs per photo at 64 px)."""

    def render(self, content) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":"), default=_plain).encode()


def _plain(value):
    """A numpy scalar as the Python number it holds; anything else is a bug to see, not to stringify."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in a served answer is not JSON")


def refused(err: BadRequest) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


def two_photos(photos: list, purpose: str = "") -> None:
    """A model that compares two photos takes exactly two per request: else a BadRequest saying so."""
    if len(photos) != 2:
        raise BadRequest(400, f"This model compares two photos: send exactly two in the field '{FIELD}'{purpose}; "
                              f"this form has {len(photos)}.")


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class FaceModel:
    def __init__(self, files: dict[str, bytes], model_id: str, device: str = "cpu", max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.005, max_upload_bytes: int = MAX_UPLOAD_BYTES):
        from trainables import inference

        # The export folder travels as bytes, so a replica on any node of a cluster has it.
        self.folder = tempfile.TemporaryDirectory(prefix="served-model-")
        for name, data in files.items():
            (Path(self.folder.name) / name).write_bytes(data)
        self.exported = inference.load_exported(self.folder.name, device=device)
        self.decision = inference.choose_decision(self.exported, None)
        self.model_id, self.limit = model_id, max_upload_bytes
        self.infer.set_max_batch_size(max_batch_size)
        self.infer.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.page = PAGE.read_text()

    @api.get("/", response_class=HTMLResponse)
    def index(self) -> str:
        return self.page

    @api.get("/info")
    def info(self) -> dict:
        from trainables.tasks import get_task

        cfg = self.exported.cfg
        return {"model": self.model_id, "task": cfg.task, "title": get_task(cfg.task).title,
                "outputs": self.exported.output_names, "decision": self.decision, "image_size": cfg.data.image_size,
                "pair": self.exported.outputs.compare is not None,
                "field": FIELD, "max_files": MAX_FILES, "max_upload_bytes": self.limit}

    @api.post("/predict")
    async def predict(self, request: Request):
        compare = self.exported.outputs.compare
        try:
            photos = await self.photos(request)
            if compare is not None:
                two_photos(photos)
            answers = await self.inferred(photos)
        except BadRequest as err:
            return refused(err)
        answer = {"model": self.model_id, "task": self.exported.cfg.task, "decision": self.decision,
                  "images": [{"file": name, **result} for (name, _), (_, result) in zip(photos, answers)]}
        if compare is not None:  # what the pair shows (e.g. similarity and same/different), the task's to say
            try:
                answer["pair"] = self.compared(np.stack([raw for raw, _ in answers]))
            except BadRequest as err:
                return refused(err)
        return Answer(answer)

    @api.post("/gradcam")
    async def gradcam(self, request: Request):
        from orchestrator.pictures import overlay
        from trainables import inference

        try:
            form = await read_form(request, self.limit)
            photos = await self.decoded(form, request)
            if self.exported.outputs.compare is not None:
                return Response(await self.pair_gradcam(photos), media_type="image/png")
            if len(photos) != 1:
                raise BadRequest(400, f"Grad-CAM explains one photo at a time; this form has {len(photos)}.")
            column = self.output_column(str(form.get("output") or ""))
        except BadRequest as err:
            return refused(err)
        _, face = photos[0]
        cams, _ = inference.grad_cam(self.exported, face[None], column)
        png = io.BytesIO()
        overlay(face, cams[0], size=256).save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png")

    async def pair_gradcam(self, photos: list[tuple[str, object]]) -> bytes:
        """The PNG of a pair's two Grad-CAM overlays, each photo explained by its score against the other."""
        import torch

        from orchestrator.pair_explain import pair_picture

        two_photos(photos, " to see what their comparison rests on")
        outputs = np.stack([raw for raw, _ in await self.inferred(photos)])
        pair = self.compared(outputs)
        return pair_picture(self.exported, [name for name, _ in photos], torch.stack([face for _, face in photos]),
                            outputs, pair)

    async def inferred(self, photos: list[tuple[str, object]]) -> list[tuple[np.ndarray, dict]]:
        """(raw outputs, analysis) per photo, each through the batched forward pass (`infer`)."""
        return await asyncio.gather(*(self.infer(face) for _, face in photos))

    def compared(self, outputs: np.ndarray) -> dict:
        """What the pair of `outputs` shows (the task's `compare`); a BadRequest 500 where the export cannot say."""
        try:
            return self.exported.outputs.compare(self.exported, outputs[0], outputs[1])
        except UserError as err:
            raise BadRequest(500, f"{str(err)[0].upper()}{str(err)[1:]}.") from None

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def infer(self, faces: list) -> list[tuple[np.ndarray, dict]]:
        """(raw outputs, analysis) per photo of every request waiting now: one forward pass, and one
        `analyse` (the task's table of the whole batch), so a request pays for neither on its own."""
        import torch

        from trainables import inference

        outputs = inference.predict_faces(self.exported, torch.stack(faces))
        return list(zip(outputs, inference.analyse(self.exported, outputs, self.decision)))

    # ---- reading a request ------------------------------------------------------------------------

    async def photos(self, request: Request) -> list[tuple[str, object]]:
        return await self.decoded(await read_form(request, self.limit), request)

    async def decoded(self, form, request: Request) -> list[tuple[str, object]]:
        """(name, (3, H, W) uint8 face) per uploaded photo, after the model id is checked."""
        from trainables import inference

        wanted = request.query_params.get("model") or form.get("model")
        if wanted and wanted != self.model_id:
            raise BadRequest(404, f"This server serves the model '{self.model_id}', not '{wanted}'; "
                                  f"ask for '{self.model_id}' or leave out the model.")
        photos = []
        for name, data in await uploaded_images(form):
            try:
                photos.append((name, inference.decode_bytes(self.exported, data, name, SEND_A_PHOTO)))
            except UserError as err:
                raise BadRequest(400, f"{str(err)[0].upper()}{str(err)[1:]}.") from None
        return photos

    def output_column(self, name: str) -> int:
        from orchestrator.predict import output_column

        if not name:
            raise BadRequest(400, "Name the output to explain in the form field 'output' (see GET info).")
        try:
            return output_column(self.exported.output_names, name)
        except UserError as err:
            raise BadRequest(400, f"{str(err).replace(' for --explain', '')}.") from None


def build(files: dict[str, bytes], model_id: str, *, replicas: int = 1, gpus_per_replica: float = 0,
          cpus_per_replica: float = 1, max_batch_size: int = 16, max_upload_bytes: int = MAX_UPLOAD_BYTES):
    """The bound application for `serve.run`."""
    device = "cuda" if gpus_per_replica > 0 else "cpu"
    return FaceModel.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
    ).bind(files, model_id, device, max_batch_size, max_upload_bytes=max_upload_bytes)
