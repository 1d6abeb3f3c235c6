"""Stage 1 of the pipeline: clean data/raw/train.csv into data/prepared/train.csv.

1. the sentinel value (params.yaml: prepare.sentinel) and any negative measurement become missing;
2. outliers by the IQR rule with k = prepare.k become missing (a unit error is not a value to keep);
3. every missing cell is filled with its column's median.
Writes quality.json: how much was missing or flagged, before the fill (a metrics file for DVC).
"""

import json
from pathlib import Path

import pandas as pd
import yaml

params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
raw = pd.read_csv("data/raw/train.csv")
x, y = raw.drop(columns="target"), raw["target"]

x = x.mask((x == params["sentinel"]) | (x < 0))  # sentinels and impossible values -> NaN
missing = float(x.isna().to_numpy().mean())

q1, q3 = x.quantile(0.25), x.quantile(0.75)
iqr = q3 - q1
outliers = (x < q1 - params["k"] * iqr) | (x > q3 + params["k"] * iqr)
x = x.mask(outliers)

x = x.fillna(x.median())
Path("data/prepared").mkdir(parents=True, exist_ok=True)
x.assign(target=y).to_csv("data/prepared/train.csv", index=False)
report = {"rows": int(len(x)), "missing_share": round(missing, 4),
          "outliers_flagged": int(outliers.to_numpy().sum()), "filled_share": round(missing + float(outliers.to_numpy().mean()), 4)}
Path("quality.json").write_text(json.dumps(report, indent=2) + "\n")
print(f"prepare: {report}")
