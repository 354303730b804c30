"""Operations material; ops.bench is the benchmark, importable from the repository root."""
