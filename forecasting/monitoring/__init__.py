"""The operating loop after the champion: the forecast archive (``archive``), accuracy against
arriving actuals and the rules that retrain (``MonitoringConfig`` in ``forecasting.config``)."""
