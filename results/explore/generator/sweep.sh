#!/bin/bash
# usage: sweep.sh NAME DATASET_ARGS... -- SET-ARGS
cd /work/main
name=$1; shift
R=/tmp/exp/$name
rm -rf $R
start=$(date +%s)
.venv/bin/coophash train --run-dir $R --progress none "$@" > $R.log 2>&1 || { echo "$name FAILED"; tail -3 $R.log; exit 1; }
t=$(( $(date +%s) - start ))
map=$(.venv/bin/coophash evaluate --run-dir $R 2>&1 | grep -o "'mAP@all': [0-9.]*" )
diag=$(.venv/bin/python /tmp/exp/diag.py  # results/explore/generator/diag.py $R 2>&1 | grep "^spread")
echo "$name [$t s] $map | $diag" | tee -a /tmp/exp/summary.txt
