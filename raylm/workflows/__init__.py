"""What runs across layers: a training run, then its test (the search's study is raylm.search's)."""
