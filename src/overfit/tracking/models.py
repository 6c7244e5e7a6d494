"""What a run gives back besides numbers: its weights, its MLflow model, its registry version, its datasets.

- **Weights.** Every FINISHED point run keeps its trained network in two small files under
  ``model/``: ``network.pt`` (the ``standardise → features → model`` module and its loss,
  ``torch.save``d whole: a state_dict alone cannot rebuild a feature map fitted on the
  training inputs, e.g. whitening that dropped directions, or a map of the user's) and
  ``model.json`` (task, input shape and dtype, classes, the first test inputs as an example).
- **LoggedModel.** :func:`log_model` turns those files into the run's MLflow LoggedModel: a
  pyfunc model (:class:`overfit.tracking.pyfunc.Network`: raw inputs in, values or class
  labels out) with signature, input example and explicit pip requirements, its source run
  the point's run and linked as that run's model output. At most one per run, whatever is
  retried or rerun. It needs no PyTorch: the network's bytes are copied, never loaded.
  ``tracking.log_model`` says which runs get one: ``best`` (the default: a single run, and a
  sweep's winner when the sweep ends, :func:`keep_best`), ``all`` (every finished point as
  it is recorded) or ``none``.
- **Registry.** :func:`register` puts a run's model under a study's name (a pipeline's
  select stage): the same model chosen again is the same version.
- **Datasets.** :func:`dataset_inputs` describes a run's train / validation / test data for
  ``log_inputs`` (the Dataset column): a name (the dataset's option), a digest of the data
  itself (equal for two runs on the same data), the context; digested once per distinct
  dataset in a process. :func:`log_inputs` is idempotent (MLflow keeps one input per
  dataset and run).

Nothing here imports PyTorch at import time; only :func:`weights` and :func:`dataset_inputs`
(which run where the network and the data are) touch tensors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overfit.tracking import runs
from overfit.tracking.store import Store, causes, open_store

if TYPE_CHECKING:
    from mlflow.entities import LoggedModel, Run
    from omegaconf import DictConfig
    from torch import Tensor, nn

    from overfit.data.base import Splits

MODES = ("best", "all", "none")  # tracking.log_model
MODEL_DIR = "model"
NETWORK_FILE = f"{MODEL_DIR}/network.pt"
META_FILE = f"{MODEL_DIR}/model.json"
TAG_MODEL = "overfit.model_id"  # on a point's run: its LoggedModel
TAG_BEST_MODEL = "best.model_id"  # on a sweep's parent: the winner's LoggedModel
TAG_BEST_URI = "best.model_uri"
MODEL_TYPE = "overfit"
ALIAS = "selected"  # registry alias: the version a study selected last
EXAMPLE_ROWS = 5
CONTEXT_TAG = "mlflow.data.context"
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
_BAD_NAME = re.compile(r"[/:.%\"']")  # characters MLflow refuses in a LoggedModel's name
_MODE_OVERRIDE = re.compile(r"(?:^|\s)\+{0,2}tracking\.log_model=(\w+)")


# --- where the network is (the training process) ---------------------------------------------------
def logs_model(cfg: DictConfig) -> bool:
    """Whether this point's run gets its LoggedModel as it is recorded: ``all``, or ``best`` for a single run."""
    mode = cfg.tracking.get("log_model", "best")
    return mode == "all" or (mode == "best" and not cfg.sweep.get("parent_run_id"))


def weights(net: nn.Module, loss: Any, splits: Splits) -> dict[str, bytes]:
    """``model/network.pt`` and ``model/model.json`` for a finished run's files ({} if the network cannot be saved)."""
    import io

    import torch

    buffer = io.BytesIO()
    try:
        torch.save({"net": net, "loss": loss}, buffer)
    except Exception as exc:  # a component of the user's that pickle cannot save (a lambda): the run still finishes
        print(f"[overfit] the trained network cannot be saved ({type(exc).__name__}: {exc}); the run keeps no model",
              file=sys.stderr, flush=True)
        return {}
    x = splits.x_test[:EXAMPLE_ROWS].detach().cpu()
    parameter = next(iter(net.parameters()), None)
    meta = {"format": 1, "task": splits.task, "input_shape": list(splits.x_test.shape[1:]),
            "input_dtype": _dtype(x), "target_dim": splits.target_dim, "num_classes": splits.num_classes,
            "class_names": list(splits.class_names) if splits.class_names else None,
            "output_dtype": "int64" if splits.task == "classification" else
            _dtype(parameter if parameter is not None else x), "example": x.tolist()}
    return {NETWORK_FILE: buffer.getvalue(), META_FILE: json.dumps(meta).encode()}


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


_INPUTS: dict[tuple[str, str, int], list[dict[str, str]]] = {}  # digests already computed in this process
_MAX_CACHED = 256


def dataset_inputs(cfg: DictConfig, splits: Splits) -> list[dict[str, str]]:
    """The run's three datasets as plain data (for :func:`log_inputs`, in any process), digested once per dataset.

    The data is a function of the dataset's config and the seed: a process digests each such
    pair once (a sweep over λ × lr × order has one or a few), hashing the tensors themselves
    (floats as float32, so a float64 run on the same data has the same digest).
    """
    from omegaconf import OmegaConf

    name = runs.component_tags(cfg)["dataset"]
    config = OmegaConf.to_container(cfg.dataset, resolve=True)
    key = (name, json.dumps(config, sort_keys=True, default=str), int(cfg.seed))
    if key not in _INPUTS:
        if len(_INPUTS) >= _MAX_CACHED:
            _INPUTS.clear()
        _INPUTS[key] = [_dataset(name, config, cfg.seed, split, getattr(splits, f"x_{split}"),
                                 getattr(splits, f"y_{split}")) for split in CONTEXTS]
    return _INPUTS[key]


def _dataset(name: str, config: Any, seed: int, split: str, x: Tensor, y: Tensor) -> dict[str, str]:
    """One split as MLflow's Dataset fields: a digest of its tensors, the tensor schema, its size."""
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    digest = hashlib.sha256(split.encode())
    arrays = []
    for t in (x, y):
        t = t.detach().cpu()
        a = np.ascontiguousarray((t.float() if t.is_floating_point() else t).numpy())
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.reshape(-1).view(np.uint8))
        arrays.append(a)
    features, targets = arrays
    spec = {part: Schema([TensorSpec(a.dtype, (-1, *a.shape[1:]))]).to_json()
            for part, a in (("features", features), ("targets", targets))}
    source = {"dataset": config, **({"seed": int(seed)} if split != "test" else {})}
    profile = {"num_rows": len(features), "features_shape": list(features.shape), "targets_shape": list(targets.shape)}
    return {"name": name, "digest": digest.hexdigest()[:8], "source_type": "code",
            "source": json.dumps(source, default=str), "schema": json.dumps({"mlflow_tensorspec": spec}),
            "profile": json.dumps(profile), "context": CONTEXTS[split]}


# --- anywhere (no PyTorch) -------------------------------------------------------------------------
def log_inputs(store: Store, run_id: str, inputs: list[dict[str, str]]) -> None:
    """The run's datasets in its Dataset column; writing them again changes nothing."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if not inputs:
        return
    datasets = [DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"], d["schema"], d["profile"]),
                             [InputTag(CONTEXT_TAG, d["context"])]) for d in inputs]

    def attempt() -> None:
        for tries in range(4):
            try:
                store.client.log_inputs(run_id, datasets=datasets)
                return
            except Exception as exc:
                # MLflow looks a dataset up, then inserts it: two processes recording runs on a new dataset at once
                # race, the second insert fails on the table's unique key; once more finds the first one's row.
                if tries == 3 or not _duplicate(exc):
                    raise

    store.attempt(attempt)


def _duplicate(exc: BaseException) -> bool:
    """A unique key violated (the exception, or what it was raised from)."""
    from sqlalchemy.exc import IntegrityError

    return any(isinstance(e, IntegrityError) for e in causes(exc))


def record_point(store: Store, run_id: str, cfg: DictConfig, net: nn.Module, loss: Any, splits: Splits) -> None:
    """A finished point's weights and datasets on its run, and its LoggedModel where ``tracking.log_model`` says."""
    files = weights(net, loss, splits)
    if files:
        runs.log_files(store, run_id, files)
    log_inputs(store, run_id, dataset_inputs(cfg, splits))
    if files and logs_model(cfg):
        log_model(store, run_id, files)


def log_model(store: Store, run_id: str, files: dict[str, Any] | None = None, run: Run | None = None) -> str | None:
    """The run's LoggedModel id: the one it has, else one made now from its ``model/`` files.

    ``files``: those files in memory (else read from the run's artifacts); ``run``: the run, if just read.
    None: the run kept no weights. A creation cut short (a kill) is completed by the next call, never duplicated.
    """
    run = run if run is not None else store.call("get_run", run_id)
    found = _existing(store, run)
    if found is not None and str(found.status) == "READY":
        return found.model_id
    files = files if files and NETWORK_FILE in files else _download(store, run)
    if files is None:
        return None
    model = found or _create(store, run)
    _fill(store, run, model, files)
    return model.model_id


def _quiet(store: Store, call: Any) -> Any:
    """``call()`` with the store's retries; None where MLflow says the thing does not exist."""
    from mlflow.exceptions import MlflowException

    def attempt() -> Any:
        try:
            return call()
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    return store.attempt(attempt)


def _existing(store: Store, run: Run) -> LoggedModel | None:
    """The run's own LoggedModel (its tag, or a model output it came from), if it has one."""
    tagged = run.data.tags.get(TAG_MODEL)
    outputs = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    for model_id in dict.fromkeys([*([tagged] if tagged else []), *outputs]):
        model = _quiet(store, lambda m=model_id: store.client.get_logged_model(m))
        if model is not None and model.source_run_id == run.info.run_id:
            return model
    return None


def _download(store: Store, run: Run) -> dict[str, bytes] | None:
    """The run's ``model/`` files from its artifacts; None if it kept none (a run older than models)."""
    run_id = run.info.run_id
    listed = {f.path for f in store.call("list_artifacts", run_id, MODEL_DIR)}
    if not {NETWORK_FILE, META_FILE} <= listed:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars on the terminal
    with tempfile.TemporaryDirectory() as tmp:
        store.call("download_artifacts", run_id, MODEL_DIR, tmp)
        return {name: (Path(tmp) / name).read_bytes() for name in (NETWORK_FILE, META_FILE)}


def _create(store: Store, run: Run) -> LoggedModel:
    """A PENDING LoggedModel of the run, already its model output and named in its tag (so it is found again)."""
    from mlflow.entities import LoggedModelOutput

    run_id = run.info.run_id
    shown = run.data.tags.get(runs.TAG_NAME, "model")
    name = _BAD_NAME.sub("_", shown).strip() or "model"
    model = store.call("create_logged_model", run.info.experiment_id, name=name[:250], source_run_id=run_id,
                       params=dict(run.data.params), tags={"overfit.point": shown}, model_type=MODEL_TYPE)
    step = int(run.data.params.get("trainer.max_epochs", 0) or 0)
    store.call("log_outputs", run_id, [LoggedModelOutput(model.model_id, step)])
    store.call("set_tag", run_id, TAG_MODEL, model.model_id)
    return model


@functools.cache
def _requirements() -> list[str]:
    """What loading needs, pinned to what trained it (never inferred: MLflow's inference loads the model)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("overfit", "torch", "mlflow", "numpy"):
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            found.append(package)
    return found


def _fill(store: Store, run: Run, model: LoggedModel, files: dict[str, Any]) -> None:
    """Write the pyfunc model into the LoggedModel, give it the run's final metrics, mark it READY."""
    import numpy as np
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model, ModelSignature
    from mlflow.pyfunc import save_model
    from mlflow.types import Schema, TensorSpec

    from overfit.tracking.pyfunc import NETWORK, Network

    meta = json.loads(files[META_FILE])
    shape = tuple(meta["input_shape"])
    classes = meta["task"] == "classification"
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(meta["input_dtype"]), (-1, *shape))]),
        outputs=Schema([TensorSpec(np.dtype(meta["output_dtype"]), (-1,) if classes else (-1, meta["target_dim"]))]))
    example = np.asarray(meta["example"], dtype=meta["input_dtype"]).reshape(-1, *shape)
    run_id = run.info.run_id
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # save_model copies the artifact: no bar
    with tempfile.TemporaryDirectory() as tmp, _quiet_mlflow():
        network = Path(tmp) / "network.pt"
        network.write_bytes(files[NETWORK_FILE])
        described = Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                          model_id=model.model_id)
        save_model(str(Path(tmp) / "model"), python_model=Network(), artifacts={NETWORK: str(network)},
                   signature=signature, input_example=example, pip_requirements=_requirements(),
                   mlflow_model=described, metadata={k: v for k, v in meta.items() if k != "example"})
        store.call("log_model_artifacts", model.model_id, str(Path(tmp) / "model"))
    _link_metrics(store, run, model.model_id)
    store.call("finalize_logged_model", model.model_id, LoggedModelStatus.READY)


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's notes on saving a pyfunc (pickled by reference, example checked against the signature) kept off
    the terminal: they are about its choices, not the run."""
    import logging

    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models", "mlflow.models.model")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _link_metrics(store: Store, run: Run, model_id: str) -> None:
    """The run's final values as the model's metrics (MLflow keeps the run's history as it is: same rows)."""
    from mlflow.entities import Metric

    run_id = run.info.run_id
    linked = []
    for key in run.data.metrics:
        history = store.call("get_metric_history", run_id, key)
        if history:
            last = max(history, key=lambda m: (m.step, m.timestamp))
            linked.append(Metric(key, last.value, last.timestamp, last.step, run_id=run_id, model_id=model_id))
    if linked:
        store.call("log_batch", run_id, metrics=linked)


# --- a sweep's winner, a study's selection --------------------------------------------------------
def mode_of(parent: Run) -> str:
    """A sweep's ``tracking.log_model``: as its command line set it, else the default (``best``)."""
    found = _MODE_OVERRIDE.findall(parent.data.tags.get("overrides", ""))
    return found[-1] if found else "best"


def keep_best(store: Store, parent_run_id: str, run_id: str) -> str | None:
    """A sweep's winner: its run's LoggedModel (made now if it has none), linked from the parent.

    The parent gets ``best.model_id`` / ``best.model_uri``, the model as its own output (its
    Models column) and the winner's datasets (its Dataset column). No model with
    ``tracking.log_model=none``, or when the winner kept no weights. A winner that has its model
    already costs a few reads: no PyTorch, nothing written twice.
    """
    parent, winner = store.call("get_run", parent_run_id), store.call("get_run", run_id)
    show_inputs(store, winner, parent)
    if mode_of(parent) == "none":
        return None
    model_id = log_model(store, run_id, run=winner)
    if model_id is None:
        print(f"[overfit] the winner's run {run_id} kept no weights (trained before runs kept their models): "
              "no model to link", flush=True)
        return None
    if parent.data.tags.get(TAG_BEST_MODEL) != model_id:
        from mlflow.entities import LoggedModelOutput, RunTag

        store.call("log_outputs", parent_run_id, [LoggedModelOutput(model_id, 0)])
        store.call("log_batch", parent_run_id, tags=[RunTag(TAG_BEST_MODEL, model_id),
                                                     RunTag(TAG_BEST_URI, f"models:/{model_id}")])
    return model_id


def keep_best_at(uri: str, deadline: float, parent_run_id: str, run_id: str) -> str | None:
    """:func:`keep_best` in another process (a sweep's writer), on the store that ``uri`` names."""
    store = open_store(uri)
    store.deadline = deadline
    return keep_best(store, parent_run_id, run_id)


def show_inputs(store: Store, source: Run, target: Run) -> None:
    """``source``'s datasets on ``target`` too (a sweep or study shows what its chosen run trained on), once."""
    used = source.inputs.dataset_inputs if source.inputs else []
    if used and not (target.inputs and target.inputs.dataset_inputs):
        store.call("log_inputs", target.info.run_id, datasets=list(used))


@dataclass(frozen=True)
class Registered:
    """A registry version: ``models:/<name>/<version>`` loads it."""

    name: str
    version: str
    model_id: str
    new: bool

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register(store: Store, name: str, run_id: str, onto: str | None = None) -> Registered | None:
    """The run's model as a version of the registered model ``name`` (created if missing), alias ``selected``.

    ``onto``: a run (the study's pipeline run) that shows the run's datasets too.

    Idempotent: if that model is a version of ``name`` already, that version is returned (a rerun
    that selects the same run registers nothing new); another model becomes the next version.
    The version's source is the LoggedModel's artifact location (a ``models:/<id>`` source would make
    MLflow's SQL registry look the model up in the process's global store, which may be another);
    the LoggedModel lists its versions in ``mlflow.modelVersions``, as ``mlflow.register_model`` does.
    None: the run kept no weights.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    run = store.call("get_run", run_id)
    if onto is not None:
        show_inputs(store, run, store.call("get_run", onto))
    model_id = log_model(store, run_id, run=run)
    if model_id is None:
        return None
    model = store.call("get_logged_model", model_id)

    def registered_model() -> None:
        try:
            store.client.create_registered_model(name, description=f"The model the study {name!r} selects.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    store.attempt(registered_model)
    quoted = name.replace("'", "\\'")
    versions = store.call("search_model_versions", f"name = '{quoted}' and run_id = '{run_id}'")
    same = [v for v in versions if v.source in (model.artifact_location, f"models:/{model_id}")]
    if same:
        version, new = min(same, key=lambda v: int(v.version)), False
    else:
        version = store.call("create_model_version", name, model.artifact_location, run_id=run_id, model_id=model_id,
                             description=f"run {run_id}: {model.tags.get('overfit.point', model.name)}")
        new = True
    listed = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    entry = {"name": name, "version": str(version.version)}
    if entry not in listed:
        store.call("set_logged_model_tags", model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*listed, entry])})
    store.call("set_registered_model_alias", name, ALIAS, str(version.version))
    return Registered(name, str(version.version), model_id, new)
