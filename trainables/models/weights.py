"""A backbone's starting weights: where they are (`locate`, before any compute is spent) and loading
them into a model (`load`, which reports what it did not load). Nothing here touches the network.

Three sources, chosen by the model config:
- `model.weights=/path/file.safetensors` (or .pth): a local file of backbone tensors.
- `model.weights=local-dir:/path`: a folder in timm's own layout, `config.json` (architecture,
  num_classes, model_args, pretrained_cfg) beside `model.safetensors`, as `timm.create_model("local-dir:...")`
  reads it and `orchestrator export` writes it.
- `model.pretrained=true` (and no `model.weights`): timm's pretrained weights, found as timm finds
  them: the model's pretrained cfg (its default tag, e.g. `resnet18` -> `resnet18.a1_in1k`) names the
  Hugging Face repo `timm/resnet18.a1_in1k`, read from the standard cache
  (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub) at
  `models--timm--resnet18.a1_in1k/snapshots/<refs/main>/model.safetensors` (else `pytorch_model.bin`).
  Weights that timm hosts only at a URL are read from torch's hub cache, as timm does. The cache is
  only read, as with HF_HUB_OFFLINE=1: a missing repo is an error that says where it was looked for.
Without either, the model trains from scratch.

Loading follows timm's `load_pretrained`: the classifier (the pretrained cfg's `classifier`) is
dropped when its shape differs from ours, i.e. it is replaced for our number of outputs. Modules the
weights' architecture does not have (CBAM attention in `cbam_resnet*`, whose weights are the plain
ResNet's) keep their initialisation. Every other tensor must be in the file, with our shape: a miss
is an error, never a silent skip. The report names every tensor not loaded and every file tensor
not used; the worker writes it beside each checkpoint and the driver tags the trial's run with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from trainables.config_sections import ModelConfig
from trainables.errors import UserError

LOCAL_DIR = "local-dir:"                                   # timm's scheme for a model folder
SAFETENSORS, PICKLED = "model.safetensors", "pytorch_model.bin"  # the Hub's weight files, in timm's order
HUB_CONFIG = "config.json"
FIX = "or set model.weights=/path/to/file.safetensors"
REPORT_ATTR = "loaded_weights"                             # where `load` leaves its report on the model
SCRATCH = "scratch"


@dataclass(frozen=True)
class Weights:
    """Where a model's starting weights are, found but not read."""
    source: str                   # what the run records: timm:resnet18.a1_in1k, file:/abs, local-dir:/abs
    file: Path                    # the tensors' file
    architecture: str             # the timm architecture these weights were made for
    model_args: dict = field(default_factory=dict)  # its construction arguments (a local-dir's config.json)


@dataclass
class LoadReport:
    source: str
    file: str
    loaded: int                   # tensors taken from the file
    not_loaded: list[str]         # the model's tensors left as initialised (e.g. the replaced classifier)
    unused: list[str]             # the file's tensors the model has no place for (e.g. the ImageNet classifier)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- where -----------------------------------------------------------------------------------------

def source_of(cfg: ModelConfig) -> str:
    """The weights' source as a run param, from the config alone (no file is looked at)."""
    if cfg.weights:
        return cfg.weights if cfg.weights.startswith(LOCAL_DIR) else f"file:{cfg.weights}"
    if cfg.pretrained:
        try:
            return f"timm:{tagged_name(_pretrained_cfg(cfg.name))}"
        except UserError:
            return f"timm:{cfg.name}"
    return SCRATCH


def locate(cfg: ModelConfig) -> Weights | None:
    """The weights `cfg` starts from (None: from scratch), or a one-line UserError saying where they
    were looked for and what to do."""
    if cfg.weights.startswith(LOCAL_DIR):
        return _local_dir(cfg)
    if cfg.weights:
        file = Path(cfg.weights).expanduser()
        if not file.is_file():
            raise UserError(f"model.weights file not found: {file}: give the path of a local .safetensors or "
                            f".pth file, or {LOCAL_DIR}/folder (timm's config.json + {SAFETENSORS})")
        return Weights(source_of(cfg), file, _architecture(cfg.name))
    if cfg.pretrained:
        return _timm_pretrained(cfg)
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment exactly as huggingface_hub.constants
    does, but at each call: huggingface_hub reads HF_HOME and HF_HUB_CACHE once, when imported."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                                               "huggingface")
    home = os.path.expandvars(os.path.expanduser(home))
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def tagged_name(pretrained_cfg: dict) -> str:
    architecture, tag = pretrained_cfg.get("architecture") or "", pretrained_cfg.get("tag") or ""
    return f"{architecture}.{tag}" if tag else architecture


@functools.lru_cache(maxsize=None)
def _pretrained_cfg_cached(name: str) -> dict:
    try:
        cfg = timm.models.get_pretrained_cfg(name)  # the registry resolves a bare name to its default tag
    except RuntimeError as err:  # an unknown tag, e.g. resnet18.nope
        raise UserError(f"{err} (model.name={name}): see timm.list_pretrained('{name.split('.')[0]}*')") from None
    if cfg is not None:
        return cfg.to_dict()
    if not timm.is_model(name):
        raise UserError(f"unknown backbone '{name}' (model.name): see timm.list_models() for the known names")
    # A name registered without a cfg of its own (our cbam_resnet*, a variant of timm's ResNet): the cfg
    # is the one timm gives the model it builds. Built on the meta device, so nothing is allocated.
    try:
        with torch.device("meta"):
            return dict(timm.create_model(name).pretrained_cfg)
    except Exception:  # a model whose init needs real tensors: build it for real, once
        return dict(timm.create_model(name).pretrained_cfg)


def _pretrained_cfg(name: str) -> dict:
    return dict(_pretrained_cfg_cached(name))


def _architecture(name: str) -> str:
    try:
        return _pretrained_cfg(name).get("architecture") or name.split(".")[0]
    except UserError:
        return name.split(".")[0]


def _timm_pretrained(cfg: ModelConfig) -> Weights:
    pretrained = _pretrained_cfg(cfg.name)
    label, architecture = tagged_name(pretrained) or cfg.name, pretrained.get("architecture") or cfg.name
    if pretrained.get("custom_load"):
        raise UserError(f"{label}'s pretrained weights are in a foreign format only timm's own loader reads; "
                        f"convert them to a .safetensors file of the model's state_dict and set model.weights to it")
    url, hub_id = pretrained.get("url") or "", pretrained.get("hf_hub_id") or ""
    torch_cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path) if url else None
    use_old_cache = int(os.environ.get("TIMM_USE_OLD_CACHE", 0) or 0) > 0  # timm's switch to prefer torch's cache
    if hub_id and not (use_old_cache and torch_cache and torch_cache.is_file()):
        return Weights(f"timm:{label}", _in_hub_cache(cfg.name, hub_id, pretrained.get("hf_hub_filename")),
                       architecture)
    if torch_cache is not None:
        if not torch_cache.is_file():
            raise UserError(f"no pretrained weights for {cfg.name} ({label}): timm reads them from {torch_cache}, "
                            f"which does not exist; download {url} there on a machine with internet, {FIX}")
        return Weights(f"timm:{label}", torch_cache, architecture)
    known = timm.list_pretrained()
    relatives = [n for n in known if cfg.name in n][:3] or difflib.get_close_matches(cfg.name, known, n=3, cutoff=0.6)
    hint = f" (timm has pretrained weights for e.g. {', '.join(relatives)})" if relatives else ""
    raise UserError(f"{cfg.name} has no pretrained weights in timm, so model.pretrained=true cannot start it"
                    f"{hint}: set model.pretrained=false to train it from scratch, {FIX}")


def _in_hub_cache(name: str, hub_id: str, filename: str | None) -> Path:
    """The cached file timm's `load_state_dict_from_hf` would read: model.safetensors before
    pytorch_model.bin, at the commit that refs/<revision> names. Only the cache is read."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    repo, _, revision = hub_id.partition("@")  # timm's `repo@revision`
    candidates = [filename] if filename else [SAFETENSORS, PICKLED]
    cache = hub_cache_dir()
    for candidate in candidates:
        found = try_to_load_from_cache(repo, candidate, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    folder = cache / repo_folder_name(repo_id=repo, repo_type="model")
    ref = folder / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "<commit in refs/main>")
    looked = folder / "snapshots" / commit / candidates[0]
    raise UserError(f"no pretrained weights for {name} in the Hugging Face cache: looked for {repo} at {looked}; "
                    f"put that repo in this cache (`hf download {repo}` where there is internet, then copy "
                    f"{folder.name} into {cache}), point HF_HOME or HF_HUB_CACHE at a cache that has it, {FIX}")


def _local_dir(cfg: ModelConfig) -> Weights:
    folder = Path(cfg.weights[len(LOCAL_DIR):]).expanduser()
    what = f"a folder with timm's {HUB_CONFIG} and {SAFETENSORS} (e.g. one written by `orchestrator export`)"
    if not folder.is_dir():
        raise UserError(f"model.weights folder not found: {folder}: give {LOCAL_DIR}{what}")
    files = [folder / name for name in (SAFETENSORS, PICKLED) if (folder / name).is_file()]
    if not (folder / HUB_CONFIG).is_file() or not files:
        raise UserError(f"model.weights {LOCAL_DIR}{folder} has no {HUB_CONFIG} or no {SAFETENSORS}: give {what}")
    try:
        config = json.loads((folder / HUB_CONFIG).read_text())
        architecture = str(config["architecture"])
        model_args = dict(config.get("model_args") or {})
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{folder / HUB_CONFIG} is not timm's config.json (it needs 'architecture'): "
                        f"{type(err).__name__}: {err}") from None
    ours = {cfg.name.split(".")[0], _architecture(cfg.name)}
    if architecture not in ours:
        raise UserError(f"model.weights {LOCAL_DIR}{folder} holds weights of {architecture} ({HUB_CONFIG}), not of "
                        f"model.name={cfg.name}: set model.name={architecture}, or give that model's weights")
    return Weights(source_of(cfg), files[0], architecture, model_args)


# ---- loading ---------------------------------------------------------------------------------------

def load(model: nn.Module, weights: Weights) -> LoadReport:
    """Load `weights` into `model` as timm's `load_pretrained` does; a backbone tensor that the file
    lacks, or has in another shape, is a UserError. The report is returned and kept on the model."""
    state = _read(weights.file, weights.source)
    own = model.state_dict()
    classifier = _classifier_names(model)
    reference = _reference_keys(weights) or set(own)
    take: dict[str, torch.Tensor] = {}
    not_loaded: list[str] = []
    wrong: list[str] = []
    for key, tensor in own.items():
        given = state.get(key)
        if given is not None and given.shape == tensor.shape:
            take[key] = given
        elif any(key.startswith(f"{name}.") for name in classifier) or key not in reference:
            not_loaded.append(key)  # replaced for our outputs, or a module the weights' architecture lacks
        elif given is None and key.endswith(".num_batches_tracked"):
            not_loaded.append(key)  # a BatchNorm step counter, not a weight; torchvision's files lack them
        else:
            wrong.append(key if given is None else f"{key} {tuple(given.shape)} vs {tuple(tensor.shape)}")
    unused = sorted(k for k in state if k not in take)
    if wrong:
        named = f"; the file's tensors are named like '{unused[0]}'" if unused and not take else ""
        raise UserError(f"{weights.source} does not fit {type(model).__name__} {weights.architecture}: {len(wrong)} "
                        f"backbone tensors are missing or of another shape, first {wrong[0]}{named}: give weights "
                        f"of this model (only its classifier {'/'.join(classifier) or '-'} may differ)")
    model.load_state_dict(take, strict=False)
    report = LoadReport(weights.source, str(weights.file), len(take), not_loaded, unused)
    setattr(model, REPORT_ATTR, report)
    return report


def report_of(model: nn.Module) -> dict:
    """The report of the weights loaded into `model` or one of its modules (e.g. an embedding net's
    backbone); a model that loaded none says it starts from scratch."""
    for module in model.modules():
        report = getattr(module, REPORT_ATTR, None)
        if isinstance(report, LoadReport):
            return report.to_dict()
    return {"source": SCRATCH, "file": "", "loaded": 0, "not_loaded": [], "unused": []}


def report_tags(report: dict, limit: int = 5000) -> dict[str, str]:
    """A report as run tags: `weights.source`, `weights.loaded`, `weights.not_loaded`, `weights.unused`
    (lists comma-joined, cut to `limit` characters with the count of the rest)."""
    def joined(names: list[str]) -> str:
        text = ", ".join(names)
        if len(text) <= limit:
            return text
        cut = text[:limit].rsplit(", ", 1)[0]
        return f"{cut} ... and {len(names) - cut.count(', ') - 1} more"

    tags = {"weights.source": str(report.get("source", SCRATCH))}
    if tags["weights.source"] != SCRATCH:
        tags.update({"weights.loaded": str(report.get("loaded", 0)),
                     "weights.not_loaded": joined(list(report.get("not_loaded", []))) or "none",
                     "weights.unused": joined(list(report.get("unused", []))) or "none"})
    return tags


def _read(file: Path, source: str) -> dict[str, torch.Tensor]:
    """The file's tensors through timm's reader: safetensors, or torch.load with weights_only (a
    training checkpoint's `state_dict` / EMA entry, and DDP's `module.` prefix, handled as timm does)."""
    try:
        state = timm.models.load_state_dict(str(file))
    except Exception as err:  # a corrupt or foreign file: the user must give another
        raise UserError(f"cannot read the weights of {source} ({file}): {type(err).__name__}: "
                        f"{(str(err).strip().splitlines() or [''])[0][:200]}") from None
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state_dict of tensors: save model.state_dict()")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _reference_keys(weights: Weights) -> set[str] | None:
    """The tensor names of the architecture the weights were made for (built on the meta device)."""
    try:
        with torch.device("meta"):
            return set(timm.create_model(weights.architecture, **weights.model_args).state_dict())
    except Exception:  # an architecture timm cannot rebuild: then every tensor of ours is expected
        return None
