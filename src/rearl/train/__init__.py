"""Training: `REARLConfig` (TRL's `GRPOConfig` plus REA-RL's options), `REARLTrainer` (the TRL
adapter), the `rearl train` job, and the offline baselines (`rearl baseline sft|rpo`)."""
