"""Training throughput of this project's path against the original notebook's loop.

python pipelines/benchmark.py                  # default 1,000-step schedule
python pipelines/benchmark.py --steps 300 --repeats 1
"""

from devtools.training_benchmark import main

if __name__ == "__main__":
    main()
