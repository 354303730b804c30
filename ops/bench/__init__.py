"""`make bench` (bench.py) and the counting plugin its workers run (countingapp.py)."""
