"""keras_l2t.training: the strategies and how they train: registry, builders, L2TModel, regularisers.

Modules: `strategies`, `builders`, `l2t`, `matching`, `meta_step`, `meta_schedule`, `meta_health`, `baselines`,
`regularizers`, `freezing`, `optim`, `features`, `probe`, `callbacks`.
"""
