import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No MLflow tracking from tests (conf/config.yaml's tracking.enabled defaults to this variable;
# subprocess jobs inherit it): tests/test_tracking.py turns it on into a temporary store.
os.environ.setdefault("RECSIM_TRACKING", "false")


@pytest.fixture(scope="session", autouse=True)
def hydra_schemas():
    """Every root's config schemas in Hydra's ConfigStore, as the entry modules register them,
    so that tests composing any conf/ root see them (recsim/jobs/schemas.py)."""
    from recsim.jobs.schemas import register_all

    register_all()


@pytest.fixture(scope="session")
def small_corpus():
    from recsim.world.corpus import load_corpus

    return load_corpus(max_per_source=400, seed=0)


@pytest.fixture(scope="session")
def small_world_config():
    from recsim.world.world import WorldConfig

    return WorldConfig(seed=7, n_members=400, n_authors=80, n_impressions=20_000,
                       slate_size=5, n_candidates=20)


@pytest.fixture(scope="session")
def small_world(small_corpus, small_world_config):
    from recsim.world.world import build_world

    return build_world(small_world_config, corpus=small_corpus)
