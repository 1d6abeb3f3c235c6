"""Stage 2 of the pipeline: train a scaled logistic regression on data/prepared/train.csv and
write its held-out accuracy to metrics.json (params.yaml: train.C, train.test_size, train.seed)."""

import json
from pathlib import Path

import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

params = yaml.safe_load(Path("params.yaml").read_text())["train"]
data = pd.read_csv("data/prepared/train.csv")
x, y = data.drop(columns="target"), data["target"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=params["test_size"], stratify=y,
                                                    random_state=params["seed"])
model = make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=2000))
model.fit(x_train, y_train)
accuracy = float(model.score(x_test, y_test))
Path("metrics.json").write_text(json.dumps({"accuracy": round(accuracy, 4)}, indent=2) + "\n")
print(f"train: test accuracy {accuracy:.4f}")
