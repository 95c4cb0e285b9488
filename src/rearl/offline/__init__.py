"""Offline jobs on files of reasoning traces: `rearl detect` (where was the answer reached, how much
thinking follows) and `rearl revise` (cut there and let a policy finish the answer)."""
