"""A study's results as people read them: the report (tables, plots, learning curves, the size fit) and the model
card. Writers only: they read the study's rows and files and compute nothing the search or the tests decide."""
