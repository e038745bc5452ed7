"""`orchestrator serve --model DIR|models:/NAME@ALIAS` or `--run RUN_ID`: a model on Ray Serve, with a web page.

The model is always an export folder (export.py's timm layout) by the time it is served: `--model DIR` is
one; `--run RUN_ID` exports that trial (or a sweep's best trial) as `export --run` does; a `models:/` URI
(`NAME@ALIAS`, `NAME/VERSION` or a LoggedModel id) finds the LoggedModel behind it and exports the very
checkpoint it was made from. The folder's files travel to the replicas as bytes (serve/app.py), so they
load it on any node. The application starts on the local Ray, or on the cluster of `--address`, and its
HTTP proxy listens on `--host` (127.0.0.1) and `--port` (8000, Ray Serve's) until Ctrl-C, `kill` or a
closed terminal.
"""

from __future__ import annotations

import signal
import socket
import tempfile
from pathlib import Path

from trainables.errors import UserError

APP_NAME = "faces"


def add_serve_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model on Ray Serve: a web page and a JSON API",
        description="Serve an exported or registered model on Ray Serve: GET / is a page where a person uploads "
                    "face photos and sees the analysis (Grad-CAM one click away); POST /predict takes the "
                    "multipart field `image` (repeatable) and answers JSON.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="DIR|URI",
                       help="a folder written by `orchestrator export`, or models:/NAME@ALIAS (e.g. "
                            "models:/faces@champion), models:/NAME/VERSION or models:/MODEL_ID")
    which.add_argument("--run", metavar="RUN_ID",
                       help="an MLflow trial run id, or a sweep's parent run id (its best trial is served)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster to serve on (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the HTTP proxy binds (default 127.0.0.1; 0.0.0.0 serves other machines)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000, Ray Serve's)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas of the model (default 1)")
    parser.add_argument("--gpus-per-replica", type=float, default=0, metavar="G",
                        help="GPUs per replica (default 0: on CPU)")
    parser.add_argument("--max-batch-size", type=int, default=16, metavar="N",
                        help="photos gathered into one forward pass, across requests (default 16)")


def cmd_serve(args) -> int:
    check_shape(args.replicas, args.gpus_per_replica, args.max_batch_size, args.port)
    with tempfile.TemporaryDirectory(prefix="serve-export-") as tmp:
        folder, model_id = resolve_model(args.model, args.run, args.tracking_uri, Path(tmp))
        files = model_files(folder)
    if not (args.address or _ray_address()):
        check_port(args.host, args.port)
    url, note = start(files, model_id, host=args.host, port=args.port, address=args.address,
                      replicas=args.replicas, gpus_per_replica=args.gpus_per_replica,
                      max_batch_size=args.max_batch_size)
    print(f"serving {model_id} at {url} (the page; POST {url}predict for JSON){note}; Ctrl-C stops", flush=True)
    # `kill` and a closed terminal stop it as Ctrl-C does: Serve is shut down, even on a cluster that outlives us.
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
        print("stopped serving", flush=True)
    return 0


def _ray_address() -> str:
    import os

    return os.environ.get("RAY_ADDRESS", "")


def check_shape(replicas: int, gpus: float, batch: int, port: int) -> None:
    if replicas < 1 or batch < 1 or gpus < 0 or not 0 < port < 65536:
        raise UserError(f"--replicas and --max-batch-size must be at least 1, --gpus-per-replica at least 0 and "
                        f"--port in 1..65535; got {replicas}, {batch}, {gpus:g} and {port}")


def check_port(host: str, port: int) -> None:
    """A port that another program holds would leave Serve's proxy failing in its own logs: said here."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}): pass another --port, or stop "
                        "what holds it") from None


def resolve_model(model: str | None, run: str | None, tracking_uri: str | None, tmp: Path) -> tuple[Path, str]:
    """(an export folder, the id requests may name) for --model or --run."""
    from trainables.inference import load_exported

    if model is not None and not model.startswith("models:/"):
        folder = Path(model).expanduser()
        load_exported(folder, device="cpu")  # a folder that is not a model is one line here, not a replica's crash
        return folder, folder.resolve().name
    from orchestrator.export import export_run
    from orchestrator.tracking import Tracking

    tracking = Tracking.holding(tracking_uri, f"MLflow run '{run}'" if run is not None else f"MLflow model '{model}'")
    if run is not None:
        export_run(run, tmp / "model", tracking=tracking)
        return tmp / "model", run
    run_id, checkpoint, metric = logged_model_source(tracking, model)
    export_run(run_id, tmp / "model", tracking=tracking, metric=metric, checkpoint=checkpoint)
    return tmp / "model", model.removeprefix("models:/")


def logged_model_source(tracking, uri: str) -> tuple[str, str, str | None]:
    """(run id, checkpoint, metric) of the LoggedModel behind a models:/ URI."""
    from mlflow.exceptions import MlflowException

    from orchestrator.logged_model import CHECKPOINT_TAG
    from orchestrator.tracking import redact

    client, ref = tracking.client, uri.removeprefix("models:/")
    name, alias = ref.split("@", 1) if "@" in ref else (ref, None)
    name, version = name.split("/", 1) if "/" in name and alias is None else (name, None)
    where = f"at {redact(tracking.uri)}"
    try:
        if alias is not None or version is not None:
            found = (client.get_model_version_by_alias(name, alias) if alias is not None
                     else client.get_model_version(name, version))
            model_id = found.model_id or found.source.removeprefix("models:/")
        else:
            model_id = name
        logged = client.get_logged_model(model_id)
    except MlflowException as err:
        reason = str(err.message).strip().splitlines()[0][:160]
        raise UserError(f"no model {uri} {where} ({reason}): register one with `sweep --register NAME` or "
                        "`export --run RUN_ID --register NAME`, or fix --tracking-uri") from None
    checkpoint = logged.tags.get(CHECKPOINT_TAG)
    if not logged.source_run_id or not checkpoint:
        raise UserError(f"{uri} {where} was not logged by this orchestrator (it has no run and checkpoint to "
                        "serve with Grad-CAM): serve it with `mlflow models serve -m " + uri + "`")
    return logged.source_run_id, checkpoint, logged.tags.get("metric")


def model_files(folder: Path) -> dict[str, bytes]:
    """Every file of the export folder, by name (it is flat)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def start(files: dict[str, bytes], model_id: str, *, host: str = "127.0.0.1", port: int = 8000,
          address: str | None = None, name: str = APP_NAME, route_prefix: str = "/", **options) -> tuple[str, str]:
    """Start (or reuse) Serve on the Ray of `address` and run the model's application; (its page's URL, a note
    on reaching it or "") as `page_url` gives them."""
    import ray
    from ray import serve

    from orchestrator import cluster
    from orchestrator.serve.app import build

    cluster.connect(address)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(build(files, model_id, **options), name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError as err:  # Serve's DEPLOY_FAILED; the replicas' own error is in the deployments' status
        app = serve.status().applications.get(name)
        said = [str(err)] + ([app.message] + [d.message for d in app.deployments.values()] if app else [])
        serve.delete(name)  # no replica left retrying; other applications on the cluster are left alone
        raise UserError(replicas_failed(failure_cause("\n".join(said)))) from None
    head = next((node["NodeManagerAddress"] for node in ray.nodes()  # Ray marks its head with this resource
                 if node["Alive"] and "node:__internal_head__" in node["Resources"]), None)
    return page_url(host, port, route_prefix, head, ray.util.get_node_ip_address())


def page_url(host: str, port: int, route_prefix: str, head_ip: str | None, here_ip: str) -> tuple[str, str]:
    """(the page's URL as seen from this machine, a note on reaching it or ""). Serve always runs a proxy on
    the head (its controller's node): from the head itself the page is at 127.0.0.1; from elsewhere, at the
    head's address, unless the proxy listens on the head's loopback only."""
    def url(at: str) -> str:
        return f"http://{f'[{at}]' if ':' in at else at}:{port}{route_prefix.rstrip('/')}/"

    anywhere = host in ("0.0.0.0", "::")
    if head_ip is None or head_ip == here_ip:
        return url("127.0.0.1" if anywhere else host), ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return url(host), (f"; it listens on the loopback of the head, {head_ip}, so open it there, or pass "
                           f"--host 0.0.0.0 to open {url(head_ip)} from here")
    return url(head_ip if anywhere else host), ""


def failure_cause(message: str) -> str:
    """The last line of a failed deployment's messages that names an error (`SomeError: ...`), without the
    error's module path; a message of ours (a UserError) is its own sentence."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if line.split(":", 1)[0].split(".")[-1].endswith(("Error", "Exception"))]
    kind, _, text = (named or lines or ["no reason given"])[-1].partition(": ")
    kind = kind.rsplit(".", 1)[-1]
    if not text:
        return kind[:300]
    return (text if kind == "UserError" else f"{kind}: {text}")[:300]


def replicas_failed(cause: str) -> str:
    """The one line for replicas that could not start, with the fix for a node that cannot import us."""
    if "No module named" in cause:
        return (f"the model's replicas failed to start ({cause}): every node must import this package (submit "
                "`serve` with `ray job submit --runtime-env runtime_env.yaml`, or pip install it on each node)")
    return f"the model's replicas failed to start: {cause}"
