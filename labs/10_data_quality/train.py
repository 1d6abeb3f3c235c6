"""Stage 2 of the pipeline: train a scaled logistic regression on data/prepared/train.csv and write
its accuracy on data/prepared/test.csv (the rows prepare.py held out) to metrics.json
(params.yaml: train.C)."""

import json
from pathlib import Path

import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

params = yaml.safe_load(Path("params.yaml").read_text())["train"]
train, test = pd.read_csv("data/prepared/train.csv"), pd.read_csv("data/prepared/test.csv")
model = make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=2000))
model.fit(train.drop(columns="target"), train["target"])
accuracy = float(model.score(test.drop(columns="target"), test["target"]))
Path("metrics.json").write_text(json.dumps({"accuracy": round(accuracy, 4)}, indent=2) + "\n")
print(f"train: test accuracy {accuracy:.4f}")
