"""The embedded default's task: synthetic column addition, the tiny policy and its warm start."""
