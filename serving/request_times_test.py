"""The event-time check of every request path (serving.enrichment.request_times): epoch seconds or
ISO-8601 text become ISO-8601 UTC, a gap becomes "" (the lookup then uses the current time), and
what the feature lookup cannot take is refused naming the column and the row."""

from __future__ import annotations

import numpy as np
import pytest

from serving.enrichment import request_times
from serving.predictor import PredictionInputError


def test_epoch_seconds_and_iso_text_become_utc_iso_and_gaps_stay_gaps():
    got = request_times("time_hour", ["2013-02-10T08:00:00-05:00", "2013-02-10 13:00", 1360501200, None, "", np.nan])
    assert got.tolist() == ["2013-02-10T13:00:00+00:00"] * 3 + ["", "", ""]
    numeric = request_times("time_hour", np.array([[1360501200.0], [np.nan]]))  # shape [n, 1] and NaN
    assert numeric.tolist() == ["2013-02-10T13:00:00+00:00", ""]
    assert request_times("time_hour", [b"2013-02-10T13:00:00Z"]).tolist() == ["2013-02-10T13:00:00+00:00"]


@pytest.mark.parametrize(
    "values,row,shown",
    [
        (["2013-02-10", "not a time"], 1, "'not a time'"),
        (["2013-02-31"], 0, "'2013-02-31'"),  # no such day
        ([1e300], 0, "1e+300"),  # beyond the times the lookup can represent
        (np.array([0.0, np.inf]), 1, "inf"),
        ([True], 0, "True"),  # a boolean is not a time
        (["NaT"], 0, "'NaT'"),
    ],
)
def test_what_the_lookup_cannot_take_is_refused_naming_the_column_and_row(values, row, shown):
    with pytest.raises(PredictionInputError) as caught:
        request_times("time_hour", values)
    message = str(caught.value)
    assert message.startswith(f"input 'time_hour': {shown} at row {row} is not a time")
    assert "ISO-8601" in message


def test_bad_shape_and_bad_utf8_are_refused():
    with pytest.raises(
        PredictionInputError, match=r"input 'time_hour': expected shape \[n\] or \[n, 1\], got \[1, 2\]"
    ):
        request_times("time_hour", np.array([[1.0, 2.0]]))
    with pytest.raises(PredictionInputError, match="input 'time_hour': row 0 is not valid UTF-8"):
        request_times("time_hour", [b"\xff"])
