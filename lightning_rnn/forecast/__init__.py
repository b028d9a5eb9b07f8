"""Time-series forecasting: a recurrent regressor, a CSV DataModule split by date, a forecast plot.

    from lightning_rnn.forecast import SequenceRegressor, TimeSeriesCSV
"""

from lightning_rnn.forecast.data import ForecastWindows, Normalisation, TimeSeriesCSV, Window, read_series_csv
from lightning_rnn.forecast.model import SequenceRegressor
from lightning_rnn.forecast.plot import ForecastPlot, plot_forecast

__all__ = [
    "ForecastPlot",
    "ForecastWindows",
    "Normalisation",
    "SequenceRegressor",
    "TimeSeriesCSV",
    "Window",
    "plot_forecast",
    "read_series_csv",
]
