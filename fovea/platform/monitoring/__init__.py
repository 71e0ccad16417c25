"""Monitoring: what happens to a model after it is registered and serves predictions.

Owns the serving side the API calls (`predictor`: which version an alias names, the pool
of replicas on Ray, sampled images kept for review), the prediction log, drift reports
over windows and their verdict events (`service`), the two-sample drift statistics
(`statistics`) and their pictures (`report_plots`), and batch scoring of a folder
(`scoring`).
"""
