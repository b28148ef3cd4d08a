"""Structured-config schemas: Hydra refuses a value of the wrong type while it composes a config.

Every config group's base file starts its defaults list with its schema, Hydra's "Structured
Config schema" pattern (conf/sim/default.yaml):

    defaults:
      - /schema/sim@_here_    # SimConfig's fields, types and defaults
      - _self_                # then this file's values, checked against them

so `recsim-run sim.n_bootstrap=abc` stops at composition with "Value 'abc' of type 'str' could not
be converted to Integer ... full_key: sim.n_bootstrap", before any work, and the composed config
(`--cfg job`) shows every field with its value. The roots' own nodes use the same schemas at a
package (conf/nearline.yaml: `- /schema/nearline@nearline`).

The schemas are not written by hand: `schema_of` derives each from its config dataclass (field
names, types, defaults), adding `_target_` (and `_convert_` where the yaml sets one) as fields,
since a structured config refuses keys it does not declare. Value checks (ranges, known names,
model directories) stay in the dataclasses' `__post_init__`, which run when Hydra instantiates
the config.

Registration: Hydra must find the schemas in its ConfigStore before it composes. Importing
`recsim.jobs` registers the main job's (ROOTS["config"]; their config classes import neither
torch nor TorchRec nor Ray, so `recsim-run --help` and config errors stay fast); every other
entry module registers its root's at import (`register("nearline")`, ...); tests register all
(tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
import typing
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ReportConfig:
    """conf/report/ (read by recsim/jobs/run.py)."""

    output_dir: str | None = None  # where report.md / report.json go; None: the run directory
    objective: str = "verdict"  # what recsim-run returns to a sweeper (recsim/report/contract.py)


@dataclass
class ModelConfig:
    """conf/model/: the backbone python -m recsim.jobs.finetune fine-tunes (embeddings/train.py
    TrainConfig's base_model_dir, pooling, num_layers)."""

    model_dir: str | None = None
    pooling: str = "mean"
    num_layers: int | None = None


@dataclass
class TasksConfig:
    """conf/tasks/: embeddings/tasks.py task names."""

    train: list[str] = field(default_factory=list)
    zero_shot: list[str] = field(default_factory=list)
    min_label_count: int = 20


@dataclass(frozen=True)
class Schema:
    config: str  # "module.Class": the config dataclass
    convert: str | None = None  # the node's `_convert_` in the yaml; None: it sets none
    target: bool = True  # the node is instantiated from its `_target_`; False: read by the job
    drop: tuple[str, ...] = ()  # fields the job sets itself, not in the yaml group
    extra: tuple[tuple[str, type], ...] = ()  # yaml keys that are not fields (the job reads them)
    # Fields the yaml sets by interpolation of a whole node (`pool: ${embeddings}`): a structured
    # node cannot take one, so they are untyped here; the node they point to has its own schema.
    linked: tuple[str, ...] = ()


SCHEMAS = {
    "world": Schema("recsim.world.world.WorldConfig", convert="all"),
    "embeddings": Schema("embeddings.config.ActorPoolConfig"),
    "retrieval": Schema("ranker.retrieval.config.RetrievalConfig", convert="all"),
    "ranker": Schema("ranker.config.RankerConfig", convert="all"),
    "sim": Schema("recsim.ope.config.SimConfig", convert="all"),
    "report": Schema("recsim.jobs.schemas.ReportConfig", target=False),
    # conf/data/: one schema per source (world, logs, obd), each option file names its own.
    "data_world": Schema("recsim.world.logs.WorldDataConfig"),
    "data_logs": Schema("recsim.world.logs.LogsConfig"),
    "data_obd": Schema("recsim.jobs.run_obd.ObdDataConfig"),
    "nearline": Schema("ranker.retrieval.nearline.NearlineConfig", linked=("pool",)),
    "retrieval_sweep": Schema("recsim.jobs.retrieval_sweep.SweepConfig", convert="all"),
    "model": Schema("recsim.jobs.schemas.ModelConfig", target=False),
    "tasks": Schema("recsim.jobs.schemas.TasksConfig", target=False),
    # recsim/jobs/finetune.py and multilingual.py build TrainConfig / EvalConfig by hand, from
    # these groups plus the model group and the seed.
    "training": Schema("embeddings.train.TrainConfig", target=False,
                       drop=("base_model_dir", "pooling", "num_layers", "seed"),
                       extra=(("single_task_steps", int),)),
    "evaluation": Schema("embeddings.evaluate.EvalConfig", target=False, drop=("seed",)),
}

# The schemas each root config composes (conf/<root>.yaml).
ROOTS = {
    "config": ("data_world", "data_logs", "data_obd", "world", "embeddings", "retrieval", "ranker", "sim",
               "report"),
    "nearline": ("world", "embeddings", "nearline"),
    "retrieval_sweep": ("world", "embeddings", "retrieval", "retrieval_sweep"),
    "finetune": ("model", "tasks", "training", "evaluation"),
    "multilingual": ("training", "evaluation"),
}
GROUP = "schema"  # ConfigStore group: /schema/<name>


def config_class(name: str) -> type:
    module, _, cls = SCHEMAS[name].config.rpartition(".")
    return getattr(importlib.import_module(module), cls)


@functools.cache
def schema_of(cls: type, convert: str | None = None, target: bool = True,
              drop: tuple[str, ...] = (), extra: tuple[tuple[str, type], ...] = (),
              linked: tuple[str, ...] = ()) -> type:
    """A dataclass with `cls`'s fields, types and defaults (minus `drop`, plus `extra` without a
    default, `linked` ones untyped and without a default), `_target_` first when `target`, then
    `_convert_` when set. A field that is itself a config dataclass gets that class's schema,
    with `_target_` (the yaml instantiates it)."""
    hints = typing.get_type_hints(cls)
    specs: list[tuple] = []
    if target:
        specs.append(("_target_", str, field(default=f"{cls.__module__}.{cls.__qualname__}")))
    if convert:
        specs.append(("_convert_", str, field(default=convert)))
    for f in dataclasses.fields(cls):
        if f.name in drop:
            continue
        kind = hints[f.name]
        if _optional_container(kind):
            # OmegaConf 2.3 cannot merge an override into a typed container that is null
            # (`sim.reward_weights={click: 1}` -> AttributeError; omry/omegaconf#1360): untyped
            # here, its dataclass checks it.
            specs.append((f.name, typing.Any, field(default=f.default)))
        elif f.name in linked:
            specs.append((f.name, typing.Any, field(default=MISSING)))
        elif dataclasses.is_dataclass(kind):
            nested = schema_of(kind)
            make = f.default_factory if f.default is dataclasses.MISSING else (lambda d=f.default: d)
            specs.append((f.name, nested, field(
                default_factory=lambda make=make, nested=nested: _as_schema(make(), nested))))
        elif f.default is not dataclasses.MISSING:
            specs.append((f.name, kind, field(default=f.default)))
        else:
            specs.append((f.name, kind, field(default_factory=f.default_factory)))
    specs += [(name, kind, field(default=MISSING)) for name, kind in extra]
    made = dataclasses.make_dataclass(f"{cls.__name__}Schema", specs)
    made.__module__ = __name__
    return made


def _optional_container(kind) -> bool:
    """`dict[...] | None` or `list[...] | None`."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return False
    args = typing.get_args(kind)
    return type(None) in args and any(typing.get_origin(a) in (dict, list) for a in args)


def _as_schema(config, schema: type):
    """A config dataclass instance as an instance of its schema (nested ones too)."""
    types = {f.name: f.type for f in dataclasses.fields(schema)}
    values = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values[f.name] = _as_schema(value, types[f.name]) if dataclasses.is_dataclass(value) else value
    return schema(**values)


def schema(name: str) -> type:
    spec = SCHEMAS[name]
    return schema_of(config_class(name), spec.convert, spec.target, spec.drop, spec.extra,
                     spec.linked)


_registered: set[str] = set()


def register(root: str) -> None:
    """Store the schemas root config `root` composes (ROOTS) in Hydra's ConfigStore, once."""
    for name in ROOTS[root]:
        if name not in _registered:
            ConfigStore.instance().store(group=GROUP, name=name, node=schema(name),
                                         provider="recsim")
            _registered.add(name)


def register_all() -> None:
    for root in ROOTS:
        register(root)
