# Set-up and checks. `make test` installs what the tests need (a CPU build of torch first when
# no torch is installed) and runs them; `make verify` checks every built-in cell's emitted
# gradients (JUnit report in verify-report.xml); `make golden` regenerates the golden files;
# `make fuzz` runs the property-based pipeline test with many random specs
# (HYPOTHESIS_PROFILE=fuzz; the default profile, used by `make test`, runs a short fixed set);
# `make learning` reruns the README's learning experiments, each single-threaded (the distance
# sweep about 30 minutes, adding about 8, reviews about 2).
PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0

.PHONY: test install golden lint verify bench fuzz learning

install:
	$(PYTHON) -m pip install -e .

test:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_CPU)"
	$(PYTHON) -m pip install -e ".[test]"
	$(PYTHON) -m pytest

verify:
	derive-cells verify --all --format junit -o verify-report.xml

bench:
	$(PYTHON) bench/bench_cells.py
	$(PYTHON) bench/bench_startup.py

fuzz:
	HYPOTHESIS_PROFILE=fuzz $(PYTHON) -m pytest tests/test_fuzz.py --hypothesis-show-statistics

golden:
	$(PYTHON) tests/update_golden.py

lint:
	$(PYTHON) -m ruff check .

LEARNING = docs/learning
ONE_THREAD = OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

learning:
	mkdir -p $(LEARNING)
	$(ONE_THREAD) derive-cells train rnn lstm gru simplified_gru --task distance \
	  --distance 10,20,40,80,160 --gate-bias f=0,1,3 --gate-bias z=default,3 --init chrono \
	  --tmax 160 --hidden 32 --epochs 4 --train-size 25000 --format json \
	  -o $(LEARNING)/distance.json --plot $(LEARNING)/distance.svg
	$(ONE_THREAD) derive-cells train rnn lstm gru simplified_gru --task adding --steps 50,100 \
	  --epochs 20 --train-size 10000 --format json -o $(LEARNING)/adding.json \
	  --plot $(LEARNING)/adding.svg
	$(ONE_THREAD) derive-cells train rnn lstm gru simplified_gru --task reviews --epochs 10 \
	  --format json -o $(LEARNING)/reviews.json --plot $(LEARNING)/reviews.svg
	$(PYTHON) bench/bench_train.py
