"""keras_l2t.running: runs and grids: RunConfig, one run, grids, executors, results, backups, tuning.

Modules: `config`, `experiment`, `grid`, `executors`, `results`, `backup`, `inference`, `presets`, `model_files`,
`trajectories`, `tuning`, `tuning_data`, `tuning_space`, `tuning_report`.
"""
