"""Speed figures, printed side by side.

python pipelines/benchmark.py                  # training loop vs the notebook's; tracking cost
python pipelines/benchmark.py --steps 300 --repeats 1
python pipelines/benchmark.py --bn             # steps/s: plain, Keras's BN, fused BN; 1 thread
python pipelines/benchmark.py --study          # main job (36 jobs) vs the 12-job sequential sweep
python pipelines/benchmark.py --cluster        # blog grid: joblib and Ray (2 workers) vs sequential
python pipelines/benchmark.py --stack          # tracking cost, server vs SQLite; jobs at once
python pipelines/benchmark.py --overhead       # launcher CPU and each job's cost outside training
python pipelines/benchmark.py --internals      # a job with train.internals off and on
"""

import sys

if __name__ == "__main__":
    if "--cluster" in sys.argv[1:]:
        from devtools.cluster_benchmark import main

        main(sys.argv[1:])
    elif "--stack" in sys.argv[1:]:
        from devtools.stack_benchmark import main

        main(sys.argv[1:])
    elif "--overhead" in sys.argv[1:]:
        from devtools.overhead_benchmark import main

        main(sys.argv[1:])
    elif "--internals" in sys.argv[1:]:
        from devtools.internals_benchmark import main

        main(sys.argv[1:])
    elif "--bn" in sys.argv[1:]:
        from devtools.bn_benchmark import main

        main(sys.argv[1:])
    elif "--study" in sys.argv[1:]:
        from devtools.study_benchmark import main

        main(sys.argv[1:])
    else:
        from devtools.training_benchmark import main

        main()
