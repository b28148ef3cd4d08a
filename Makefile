# The two commands a user needs: `make demo` (default experiment end to end) and `make test`.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

.PHONY: setup demo test test-slow bench finetune ab-embeddings clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m recsim.run $(ARGS)

test: setup
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -m slow -q $(ARGS)

bench: setup
	$(PY) benchmarks/bench_world.py
	$(PY) benchmarks/bench_estimators.py
	$(PY) benchmarks/bench_embeddings.py

finetune: setup  # LiPost: base vs single-task vs multi-task fine-tunes (about an hour on 2 cores)
	$(PY) -m embeddings.compare $(ARGS)

ab-embeddings: setup  # downstream A/B: the ranker with base vs fine-tuned post embeddings
	$(PY) -m recsim.run experiment=embeddings_ab $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache benchmarks/results
