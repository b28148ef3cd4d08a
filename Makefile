# The two commands a user needs: `make demo` (default experiment end to end) and `make test`.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

.PHONY: setup demo test test-slow bench finetune ab-embeddings ab-funnel validity nearline clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m recsim.jobs.run $(ARGS)

test: setup
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -m slow -q $(ARGS)

bench: setup
	$(PY) benchmarks/bench_world.py
	$(PY) benchmarks/bench_estimators.py
	$(PY) benchmarks/bench_logs.py --rows 5000000  # data=logs, lazy vs eager files: about 8 minutes, 9.3 GB (10M, its default: about 18 GB)
	$(PY) benchmarks/bench_embeddings.py
	$(PY) benchmarks/bench_ranker.py
	$(PY) benchmarks/bench_funnel.py  # retrieval + features + ranker + slate, batched vs one at a time: about 1.5 minutes
	$(PY) benchmarks/bench_nearline.py  # a 10-minute stream
	$(PY) benchmarks/bench_retrieval.py  # 1M vectors, top-2000: about 10 minutes

finetune: setup  # LiPost: base vs single-task vs multi-task fine-tunes (about an hour on 2 cores)
	$(PY) -m recsim.jobs.finetune $(ARGS)

ab-embeddings: setup  # downstream A/B: the ranker with base vs fine-tuned post embeddings
	$(PY) -m recsim.jobs.run experiment=embeddings_ab $(ARGS)

ab-funnel: setup  # both policies retrieve K=2,000 candidates from FAISS, rank and serve the whole slate
	$(PY) -m recsim.jobs.run experiment=funnel_ab $(ARGS)

validity: setup  # the pipeline's intervals over 20 seeds x 4 regimes: coverage, bias, wrong-sign calls
	$(PY) -m recsim.jobs.validity $(ARGS)

nearline: setup  # replay the debug world's posts through the near-line path (Ray actors -> FAISS)
	$(PY) -m recsim.jobs.nearline $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache benchmarks/results
