"""Stage 1 of the pipeline: split data/raw/train.csv into training and test rows, then clean both.

1. the test rows are split off first (params.yaml: split.test_size, split.seed, stratified), so
   that no statistic below sees them;
2. the sentinel value (prepare.sentinel) and any negative measurement become missing;
3. outliers by the IQR rule with k = prepare.k become missing (a unit error is not a value to
   keep), with the quartiles of the training rows;
4. every missing cell is filled with its column's median over the training rows.
Writes data/prepared/train.csv and data/prepared/test.csv, and quality.json: how much was missing
or flagged, before the fill (a metrics file for DVC).
"""

import json
from pathlib import Path

import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

all_params = yaml.safe_load(Path("params.yaml").read_text())
split, params = all_params["split"], all_params["prepare"]
raw = pd.read_csv("data/raw/train.csv")
train_rows, test_rows = train_test_split(raw, test_size=split["test_size"], stratify=raw["target"],
                                         random_state=split["seed"])

x = raw.drop(columns="target")
x = x.mask((x == params["sentinel"]) | (x < 0))  # sentinels and impossible values -> NaN
missing = float(x.isna().to_numpy().mean())

fit = x.loc[train_rows.index]  # quartiles and medians: from the training rows only
q1, q3 = fit.quantile(0.25), fit.quantile(0.75)
iqr = q3 - q1
outliers = (x < q1 - params["k"] * iqr) | (x > q3 + params["k"] * iqr)
x = x.mask(outliers)
x = x.fillna(x.loc[train_rows.index].median())

prepared = x.assign(target=raw["target"])
Path("data/prepared").mkdir(parents=True, exist_ok=True)
prepared.loc[train_rows.index].to_csv("data/prepared/train.csv", index=False)
prepared.loc[test_rows.index].to_csv("data/prepared/test.csv", index=False)
report = {"rows": int(len(x)), "train_rows": int(len(train_rows)), "test_rows": int(len(test_rows)),
          "missing_share": round(missing, 4), "outliers_flagged": int(outliers.to_numpy().sum()),
          "filled_share": round(missing + float(outliers.to_numpy().mean()), 4)}
Path("quality.json").write_text(json.dumps(report, indent=2) + "\n")
print(f"prepare: {report}")
