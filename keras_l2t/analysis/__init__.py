"""keras_l2t.analysis: what the results say: statistics, intervals, reports, transferability.

Modules: `stats`, `intervals`, `sequential`, `accuracy_plots`, `report`, `transferability`, `ranking`,
`ranking_report`.
"""
