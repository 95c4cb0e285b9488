"""Evaluation: benchmark files, sampling at token budgets (`rearl eval`), the metrics computed from
sample records, and reports with plots that compare runs (`rearl report`)."""
