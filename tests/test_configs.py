"""Every config in conf/ composes and builds; bad values are refused, naming their key.

Type errors are refused when Hydra composes (the schemas of recsim/jobs/schemas.py), value errors
when the config dataclasses are built (their __post_init__): both before any work, and both
here without running a pipeline.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from embeddings.config import ModelDirError, check_model_dir
from recsim.jobs import schemas
from recsim.paths import conf_dir, project_path

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF.parent
STAGE_GROUPS = ("world", "embeddings", "retrieval", "ranker", "sim")
ROOT_STAGES = {"config": STAGE_GROUPS, "nearline": ("world", "embeddings", "nearline"),
               "retrieval_sweep": ("world", "embeddings", "retrieval", "retrieval_sweep")}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(root: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=conf_dir(root)):
        return compose(root, overrides=overrides)


def _build(root: str, cfg) -> list:
    """The config objects the root's job builds from `cfg`, as the job builds them."""
    if root in ROOT_STAGES:
        return [instantiate(cfg[stage]) for stage in ROOT_STAGES[root]]
    from embeddings.evaluate import EvalConfig
    from embeddings.train import TrainConfig

    if root == "finetune":
        from recsim.jobs.finetune import check_configs

        return check_configs(cfg)
    evaluation = EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)
    training = OmegaConf.to_container(cfg.training, resolve=True)  # as recsim/jobs/multilingual.py
    training.pop("single_task_steps", None)  # (its base model: the converted e5, not made here)
    return [TrainConfig(**{**training, "base_model_dir": None, "pooling": "mean", "seed": cfg.seed}),
            evaluation]


@pytest.fixture(scope="module")
def fake_model_dir(tmp_path_factory) -> str:
    """A directory with every file check_model_dir looks for (none of them loadable)."""
    path = tmp_path_factory.mktemp("fake_model")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (path / name).write_text("{}")
    return str(path)


def _is_model_dir(path) -> bool:
    try:
        check_model_dir(project_path(path), "x")
    except ModelDirError:
        return False
    return True


def _stand_ins(cfg, model_dir: str) -> list[str]:
    """Overrides that point the policies' encoder directories not trained here (`make finetune`
    writes them) at a stand-in; first, that the config without them fails clearly."""
    overrides = []
    for role in ("control", "treatment"):
        path = cfg.sim[role].encoder_dir
        if path is not None and not _is_model_dir(path):
            with pytest.raises(Exception, match=rf"sim\.{role}\.encoder_dir: .* is not a model "
                                                r"directory.*make finetune"):
                instantiate(cfg.sim)
            overrides.append(f"sim.{role}.encoder_dir={model_dir}")
    return overrides


@pytest.mark.parametrize("experiment", [None, *_options("experiment")])
def test_every_config_composes_and_instantiates(experiment, fake_model_dir):
    for group in STAGE_GROUPS:
        for option in _options(group):
            overrides = [f"{group}={option}"] + ([f"experiment={experiment}"] if experiment else [])
            overrides += _stand_ins(_compose("config", overrides), fake_model_dir)
            cfg = _compose("config", overrides)
            for stage, obj in zip(STAGE_GROUPS, _build("config", cfg)):
                assert type(obj).__name__.endswith("Config"), (stage, obj)
                # The composed node holds every field (the schema's defaults where the yaml is silent).
                fields = {f.name for f in dataclasses.fields(obj)}
                assert fields <= set(cfg[stage]), (stage, fields - set(cfg[stage]))


@pytest.mark.parametrize("ablation", _options("ablation"))
def test_every_ablation_variant_instantiates(ablation, fake_model_dir):
    overrides = ["experiment=ranker_ablation", f"ablation={ablation}"]
    overrides += _stand_ins(_compose("config", overrides), fake_model_dir)
    sim = _build("config", _compose("config", overrides))[-1]
    assert sim.treatment.name == ablation and sim.control.name == "all_features"


@pytest.mark.parametrize("root, overrides", [
    ("config", []),
    ("nearline", []),
    ("retrieval_sweep", []),
    ("retrieval_sweep", ["world=debug", "retrieval=hnsw", "retrieval_sweep.dual_encoder.steps=20"]),
    ("finetune", []),
    ("finetune", ["training=debug", "evaluation=debug"]),
    ("multilingual", []),
    ("multilingual", ["training=debug", "evaluation=debug"]),
])
def test_every_root_composes_and_builds(root, overrides):
    objects = _build(root, _compose(root, overrides))
    assert objects and all(type(o).__name__.endswith("Config") for o in objects)


def test_schemas_match_the_configs_they_check():
    """Each schema's `_target_` is its config class, and it holds the class's fields (but those
    the job sets itself), so a yaml key the class does not take is refused at composition."""
    for name, spec in schemas.SCHEMAS.items():
        cls, schema = schemas.config_class(name), schemas.schema(name)
        own = [f.name for f in dataclasses.fields(schema) if f.name not in ("_target_", "_convert_")]
        expected = [f.name for f in dataclasses.fields(cls) if f.name not in spec.drop]
        assert own == expected + [n for n, _ in spec.extra], name
        node = OmegaConf.structured(schema)
        if spec.target:
            assert get_class(node._target_) is cls, name
        assert node.get("_convert_") == spec.convert, name
    used = {name for names in schemas.ROOTS.values() for name in names}
    assert used == set(schemas.SCHEMAS)


# (root, overrides, key, message fragment). Value errors: the ValueError raised while the config
# is built starts with the key; type errors: Hydra's composition error names the key (full_key).
TYPE_ERRORS = [
    ("config", ["sim.n_bootstrap=abc"], "sim.n_bootstrap", "could not be converted to Integer"),
    ("config", ["retrieval.top_k=ten"], "retrieval.top_k", "could not be converted to Integer"),
    ("config", ["sim.alpha=small"], "sim.alpha", "could not be converted to Float"),
    ("config", ["world.days=soon"], "world.days", "could not be converted to Float"),
    ("config", ["world.n_members=many"], "world.n_members", "could not be converted to Integer"),
    ("config", ["ranker.learning_rate=fast"], "ranker.learning_rate", "to Float"),
    ("config", ["ranker.dense_arch=[64,wide]"], "ranker.dense_arch", "to Integer"),
    ("config", ["embeddings.encoder.max_length=long"], "embeddings.encoder.max_length", "to Integer"),
    ("config", ["embeddings.num_actors=two"], "embeddings.num_actors", "to Integer"),
    ("config", ["sim.treatment.features=ids"], "sim.treatment.features", "ListConfig"),
    ("nearline", ["nearline.rate=fast"], "nearline.rate", "to Float"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder.steps=many"],
     "retrieval_sweep.dual_encoder.steps", "to Integer"),
    ("retrieval_sweep", ["retrieval_sweep.ks=[100,all]"], "retrieval_sweep.ks", "to Integer"),
    ("finetune", ["training.steps=many"], "training.steps", "to Integer"),
    ("finetune", ["model.num_layers=two"], "model.num_layers", "to Integer"),
    ("multilingual", ["evaluation.n_support=lots"], "evaluation.n_support", "to Integer"),
]
VALUE_ERRORS = [
    ("config", ["retrieval.index=Annoy"], "retrieval.index", "unknown index type 'Annoy'; choose from"),
    ("config", ["retrieval.hnsw_m=0"], "retrieval.hnsw_m", "must be >= 2, got 0"),
    ("config", ["retrieval.nprobe=0"], "retrieval.nprobe", "must be >= 1, got 0"),
    ("config", ["retrieval.nlist=0"], "retrieval.nlist", "must be >= 1 (or null), got 0"),
    ("config", ["retrieval.top_k=0"], "retrieval.top_k", "must be >= 1"),
    ("config", ["retrieval.recall_at=[10,0]"], "retrieval.recall_at[1]", "must be >= 1"),
    ("config", ["retrieval.dim=32", "retrieval.pq_m=5"], "retrieval.pq_m", "does not divide"),
    ("config", ["sim.estimators=[magic]"], "sim.estimators", "unknown ['magic']; choose from"),
    ("config", ["sim.estimators=[ips,iips]"], "sim.estimators", "unknown ['iips']"),  # slate
    ("config", ["sim.estimators=[]"], "sim.estimators", "must not be empty"),
    ("config", ["sim.metric=foo"], "sim.metric", "must be one of ['click'"),
    ("config", ["sim.metric=like"], "sim.estimators", "need a reward model"),
    ("config", ["sim.metric=like", "sim.estimators=[ips]", "sim.segment_estimator=dr"],
     "sim.segment_estimator", "need a reward model"),
    ("config", ["sim.alpha=1.5"], "sim.alpha", "must be in (0, 1), got 1.5"),
    ("config", ["sim.n_bootstrap=0"], "sim.n_bootstrap", "must be >= 1, got 0"),
    ("config", ["sim.segment_estimator=magic"], "sim.segment_estimator", "must be one of"),
    ("config", ["sim.reward_model=logging"], "sim.reward_model",
     "must be one of ['fitted', 'control', 'treatment'], got 'logging'"),
    ("config", ["sim.policy_temperature=-1"], "sim.policy_temperature", "must be >= 0"),
    ("config", ["sim.ray_shards=-2"], "sim.ray_shards", "must be >= 0"),
    ("config", ["sim.max_eval_requests=0"], "sim.max_eval_requests", "must be >= 1 (or null)"),
    ("config", ["sim.metric=weighted", "sim.estimators=[ips]", "sim.segment_estimator=ips",
                "sim.reward_weights={click:1,view:2}"], "sim.reward_weights", "unknown ['view']"),
    ("config", ["sim.metric=weighted", "sim.estimators=[ips]", "sim.segment_estimator=ips",
                "sim.reward_weights={click:1,like:heavy}"], "sim.reward_weights.like", "must be a number"),
    ("config", ["sim.treatment.features=[ids,colour]"], "sim.treatment.features",
     "unknown feature group(s) ['colour']"),
    ("config", ["sim.control.features=[context]"], "sim.control.features", "needs a sparse group"),
    ("config", ["sim.treatment.name=ranker_without_embeddings"], "sim.treatment.name",
     "is also the control's name"),
    ("config", ["sim.treatment.encoder_dir=/nonexistent/model"], "sim.treatment.encoder_dir",
     "/nonexistent/model is not a model directory"),
    # the funnel: a policy's candidate source, its K against the slate, its index
    ("config", ["sim.treatment.source=annoy"], "sim.treatment.source", "must be one of"),
    ("config", ["sim.treatment.source=retrieval", "sim.treatment.top_k=5"], "sim.treatment.top_k",
     "5 candidates cannot fill a slate of 10"),
    ("config", ["sim.control.source=retrieval", "sim.control.index=ScaNN"], "sim.control.index",
     "unknown index type 'ScaNN'"),
    ("config", ["sim.control.member_vectors=none"], "sim.control.member_vectors", "must be one of"),
    ("config", ["sim.treatment.temperature=-1"], "sim.treatment.temperature", "must be >= 0"),
    ("config", ["sim.slate_estimators=[ips]"], "sim.slate_estimators", "unknown ['ips']"),
    ("config", ["world.slate_size=99"], "world.slate_size", "99 is more than world.n_candidates (40)"),
    ("config", ["world.n_members=0"], "world.n_members", "must be >= 1, got 0"),
    ("config", ["world.n_impressions=-5"], "world.n_impressions", "must be >= 1"),
    ("config", ["world.days=0"], "world.days", "must be > 0"),
    ("config", ["world.logging_epsilon=1.5"], "world.logging_epsilon", "must be in [0, 1]"),
    ("config", ["world.logging_temperature=0"], "world.logging_temperature", "must be > 0"),
    ("config", ["world.corpus_sources=[twitter]"], "world.corpus_sources", "unknown ['twitter']"),
    ("config", ["world.member_langs={en:-1}"], "world.member_langs.en", "must be >= 0"),
    ("config", ["world.max_posts_per_source=0"], "world.max_posts_per_source", "must be >= 1"),
    ("config", ["ranker.learning_rate=0"], "ranker.learning_rate", "must be > 0, got 0"),
    ("config", ["ranker.epochs=0"], "ranker.epochs", "must be >= 1"),
    ("config", ["ranker.batch_size=0"], "ranker.batch_size", "must be >= 1"),
    ("config", ["ranker.weight_decay=-0.1"], "ranker.weight_decay", "must be >= 0"),
    ("config", ["ranker.train_fraction=1.0"], "ranker.train_fraction", "must be in (0, 1)"),
    ("config", ["ranker.validation_fraction=1.0"], "ranker.validation_fraction", "must be in [0, 1)"),
    ("config", ["ranker.interaction=transformer"], "ranker.interaction", "unknown 'transformer'"),
    ("config", ["ranker.embedding_projection=svd"], "ranker.embedding_projection", "must be one of"),
    ("config", ["ranker.score_weights={click:-1}"], "ranker.score_weights.click", "must be >= 0"),
    ("config", ["ranker.dense_arch=[0]"], "ranker.dense_arch[0]", "must be >= 1"),
    ("config", ["embeddings.encoder.pooling=max"], "embeddings.encoder.pooling", "must be one of"),
    ("config", ["embeddings.encoder.precision=fp16"], "embeddings.encoder.precision", "must be one of"),
    ("config", ["embeddings.encoder.backend=onnx"], "embeddings.encoder.backend", "must be one of"),
    ("config", ["embeddings.encoder.device=tpu"], "embeddings.encoder.device", "must be auto, cpu"),
    ("config", ["embeddings.encoder.max_length=0"], "embeddings.encoder.max_length", "must be >= 1"),
    ("config", ["embeddings.encoder.model_dir=/nonexistent/model"], "embeddings.encoder.model_dir",
     "is not a model directory"),
    ("config", ["embeddings.num_actors=0"], "embeddings.num_actors", "must be >= 1"),
    ("nearline", ["nearline.rate=0"], "nearline.rate", "must be > 0"),
    ("nearline", ["nearline.arrivals=poisson"], "nearline.arrivals", "must be one of ['world'"),
    ("nearline", ["nearline.index=Annoy"], "nearline.index", "unknown index type 'Annoy'"),
    ("nearline", ["nearline.max_batch=0"], "nearline.max_batch", "must be >= 1"),
    ("nearline", ["nearline.limit=0"], "nearline.limit", "must be >= 1 (or null)"),
    ("retrieval_sweep", ["retrieval_sweep.indexes=[Flat,Annoy]"], "retrieval_sweep.indexes",
     "unknown index type 'Annoy'"),
    ("retrieval_sweep", ["retrieval_sweep.history_fallbacks=[random]"],
     "retrieval_sweep.history_fallbacks", "unknown ['random']"),
    ("retrieval_sweep", ["retrieval_sweep.ks=[0]"], "retrieval_sweep.ks[0]", "must be >= 1"),
    ("retrieval_sweep", ["retrieval_sweep.engagement=view"], "retrieval_sweep.engagement",
     "must be one of"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder_numbers=[words]"],
     "retrieval_sweep.dual_encoder_numbers", "unknown ['words']"),
    ("retrieval_sweep", ["retrieval_sweep.probe_folds=1"], "retrieval_sweep.probe_folds", ">= 2"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder.pooling=max"],
     "retrieval_sweep.dual_encoder.pooling", "must be one of"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder.batch_size=1"],
     "retrieval_sweep.dual_encoder.batch_size", "must be >= 2"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder.model_dir=/nonexistent"],
     "retrieval_sweep.dual_encoder.model_dir", "/nonexistent is not a model directory"),
    ("retrieval_sweep", ["retrieval_sweep.dual_encoder.prompt.numbers=words"],
     "retrieval_sweep.dual_encoder.prompt.numbers", "must be one of"),
    ("retrieval_sweep", ["retrieval.nprobe=0"], "retrieval.nprobe", "must be >= 1"),
    ("finetune", ["training.steps=0"], "training.steps", "must be >= 1"),
    ("finetune", ["training.single_task_steps=0"], "training.single_task_steps", "must be >= 1"),
    ("finetune", ["training.sampling=random"], "training.sampling", "must be one of"),
    ("finetune", ["training.label_pair_share=2"], "training.label_pair_share", "must be in [0, 1]"),
    ("finetune", ["training.batch_size=1"], "training.batch_size", "must be >= 2"),
    ("finetune", ["model.pooling=max"], "model.pooling", "must be one of"),
    ("finetune", ["model.model_dir=/nonexistent"], "model.model_dir", "is not a model directory"),
    ("finetune", ["evaluation.knn_k=0"], "evaluation.knn_k", "must be >= 1"),
    ("multilingual", ["training.learning_rate=0"], "training.learning_rate", "must be > 0"),
    ("multilingual", ["evaluation.dims=[]"], "evaluation.dims", "must not be empty"),
]


def _value_error(err: BaseException) -> ValueError | None:
    while err is not None and not isinstance(err, ValueError):
        err = err.__cause__
    return err


def test_reward_weights_can_be_set_on_the_command_line():
    """A null typed dict cannot take an override in OmegaConf 2.3: the schema leaves it untyped."""
    cfg = _compose("config", ["sim.metric=weighted", "sim.estimators=[ips,snips]",
                              "sim.segment_estimator=ips", "sim.reward_weights={click:1,like:2}"])
    sim = _build("config", cfg)[-1]
    assert sim.reward_weights == {"click": 1, "like": 2}


@pytest.mark.parametrize("root, overrides, key, fragment", TYPE_ERRORS,
                         ids=[" ".join(c[1]) for c in TYPE_ERRORS])
def test_a_value_of_the_wrong_type_is_refused_at_composition(root, overrides, key, fragment):
    with pytest.raises(ConfigCompositionException) as err:
        _compose(root, overrides)
    message = str(err.value) + str(err.value.__cause__)
    assert key.rsplit(".", 1)[-1] in message and fragment in message, message


@pytest.mark.parametrize("root, overrides, key, fragment", VALUE_ERRORS,
                         ids=[" ".join(c[1]) for c in VALUE_ERRORS])
def test_a_bad_value_is_refused_naming_its_key(root, overrides, key, fragment):
    cfg = _compose(root, overrides)
    with pytest.raises(Exception) as err:
        _build(root, cfg)
    cause = _value_error(err.value)
    assert cause is not None, repr(err.value)
    assert str(cause).startswith(f"{key}: "), str(cause)
    assert fragment in str(cause), str(cause)


@pytest.mark.parametrize("files, fragment", [
    ((), "is not a model directory (no config.json)"),
    (("config.json",), "has no model weights"),
    (("config.json", "model.safetensors"), "has no tokenizer"),
    (("config.json", "pytorch_model.bin", "vocab.txt"), None),
])
def test_an_incomplete_model_directory_is_refused(tmp_path, files, fragment):
    for name in files:
        (tmp_path / name).write_text("{}")
    for root, key in (("config", "embeddings.encoder.model_dir"),
                      ("config", "sim.treatment.encoder_dir"),
                      ("retrieval_sweep", "retrieval_sweep.dual_encoder.model_dir")):
        cfg = _compose(root, [f"{key}={tmp_path}"])
        if fragment is None:
            _build(root, cfg)
            continue
        with pytest.raises(Exception) as err:
            _build(root, cfg)
        cause = _value_error(err.value)
        assert str(cause).startswith(f"{key}: {tmp_path} "), str(cause)
        assert fragment in str(cause) and isinstance(cause, FileNotFoundError)


def test_ivf_lists_beyond_the_posts_fail_before_faiss():
    from ranker.retrieval.index import PostIndex, RetrievalConfig

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    ids = np.arange(300)
    with pytest.raises(ValueError, match=r"^retrieval\.nlist: 500 IVF lists need at least 500 "
                                         r"posts to train on, got 300"):
        PostIndex(ids, x, RetrievalConfig(index="IVFFlat", nlist=500))
    with pytest.raises(ValueError, match=r"^retrieval\.nlist: 64 .* got 50 \(retrieval\.max_train_points=50\)"):
        PostIndex(ids, x, RetrievalConfig(index="IVFFlat", nlist=64, max_train_points=50))
    with pytest.raises(ValueError, match=r"^retrieval\.pq_bits: 10 bits make 1024 codes"):
        PostIndex(ids, x, RetrievalConfig(index="IVFPQ", nlist=4, pq_bits=10))
    assert PostIndex(ids, x, RetrievalConfig(index="IVFFlat", nlist=300)).ntotal == 300


def _job(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "recsim.jobs.run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_main_job_refuses_a_wrongly_typed_value_before_any_work(tmp_path):
    proc = _job(f"hydra.run.dir={tmp_path}", "sim.n_bootstrap=abc")
    assert proc.returncode != 0
    assert "full_key: sim.n_bootstrap" in proc.stderr
    assert "Value 'abc' of type 'str' could not be converted to Integer" in proc.stderr
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "report.md").exists()


def test_the_main_job_still_prints_its_help_and_config():
    helped = _job("--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "schema: " in helped.stdout and "sim: default" in helped.stdout
    shown = _job("--cfg", "job", "experiment=debug")
    assert shown.returncode == 0, shown.stderr[-2000:]
    job = OmegaConf.create(shown.stdout)
    assert job.sim.n_bootstrap == 200 and job.sim.reward_model == "fitted"  # a schema default
    assert job.world.n_members == 300
