"""A pandas stand-in for the few polars calls Ultralytics' training makes: results.csv reads and two plots.

Device runs only (bench/gpu/seed640.sh). The polars runtime wheel is 54 MB, and what travels to a lent GPU machine is
capped at 64 MB with the data set (33 MB) in it; the GPU image ships pandas. Training, validation and every metric are
untouched: polars only reads results.csv back for the checkpoint's `train_results` and draws results.png/labels.jpg.
"""

from __future__ import annotations

import io

import pandas as pd

__version__ = "0.0-npuyolo-shim"


class DataFrame:
    def __init__(self, data=None, schema=None, *, _df: pd.DataFrame | None = None):
        self._df = _df if _df is not None else pd.DataFrame(data, columns=schema)

    @property
    def columns(self) -> list[str]:
        return list(self._df.columns)

    def __getitem__(self, key):
        return self._df[key].to_numpy()

    def __len__(self) -> int:
        return len(self._df)

    def select(self, *cols) -> "DataFrame":
        names = [c for group in cols for c in ([group] if isinstance(group, str) else group)]
        return DataFrame(_df=self._df[names])

    def to_numpy(self):
        return self._df.to_numpy()

    def to_dict(self, as_series: bool = True) -> dict:
        return {c: self._df[c].tolist() for c in self._df.columns}


def read_csv(source, infer_schema_length=None, **_kwargs) -> DataFrame:
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return DataFrame(_df=pd.read_csv(source))
