"""The model card (a bundle's README.md), generated from config and metrics by a pure function.

The YAML front matter follows the Hugging Face model card spec (``model-index`` carries the
measured metrics), built with ``huggingface_hub.ModelCardData`` so the Hub parses it.
"""

from __future__ import annotations

from typing import Sequence

DATASET_ID = "gpiosenka/100-sports-image-classification"
DATASET_NAME = "100 Sports Image Classification"
DATASET_URL = "https://www.kaggle.com/datasets/gpiosenka/sports-classification"
_METRICS = (("accuracy", "Accuracy"), ("top5_accuracy", "Top-5 accuracy"), ("macro_f1", "Macro F1"))


def model_name(config: dict) -> str:
    return f"sports-classifier-{config['backbone'].replace('_', '-')}"


def front_matter(config: dict, metrics: dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=DATASET_ID, dataset_name=DATASET_NAME, dataset_split=split,
            metric_type=key, metric_name=f"{title} ({split})", metric_value=round(float(m[key]), 4),
        )
        for split, m in metrics.items() if isinstance(m, dict)
        for key, title in _METRICS if key in m
    ]
    data = ModelCardData(
        library_name="keras", pipeline_tag="image-classification", license="apache-2.0",
        tags=["image-classification", "keras", "sports", "sports_classifier",
              *dict.fromkeys([config["backbone"], *(m["backbone"] for m in config.get("members") or ())])],
        datasets=[DATASET_ID], model_name=model_name(config), eval_results=results or None,
    )
    return data.to_yaml()


def _metrics_table(metrics: dict) -> str:
    rows = ["| split | images | accuracy | top-5 | macro F1 | loss | measured with |",
            "|---|---|---|---|---|---|---|"]
    for split, m in metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            rows.append(
                f"| {split} | {m.get('n', '')} | {m['accuracy']:.2%} | {m.get('top5_accuracy', 0):.2%} "
                f"| {m.get('macro_f1', 0):.4f} | {m.get('loss', float('nan')):.4f} | {m.get('engine', '')} |"
            )
    return "\n".join(rows) if len(rows) > 2 else "_No metrics recorded yet: run `sports-classifier evaluate`._"


FULL_TRAIN_IMAGES = 13492


def _data_line(data: dict) -> str:
    n = data.get("train_images", "?")
    subset = (f", a subset of the dataset's {FULL_TRAIN_IMAGES:,} training images"
              if isinstance(n, int) and n < FULL_TRAIN_IMAGES else "")
    return (f"{n} training images of `{data.get('dataset', '?')}` ({data.get('description', '')}{subset}), "
            f"{data.get('valid_images', '?')} validation images")


def _recipe(training: dict | None) -> str:
    if not training:
        return "_No training record (the bundle was not produced by `sports-classifier train`)._"
    if "members" in training:  # an ensemble: one block per member
        blocks = [f"Each member was trained on its own ({training.get('members_seconds', '?')} s in all), "
                  "then their probabilities were averaged:"]
        for name, member in zip(training.get("ensemble", []), training["members"]):
            options = ", ".join(f"`{k}={v}`" for k, v in member.items() if k not in ("data", "run"))
            blocks.append(f"- **{name}**: {options}")
        data = training.get("data")
        if isinstance(data, dict):
            blocks.insert(0, f"Data: {_data_line(data)}.\n")
        return "\n".join(blocks)
    lines = [f"- `{k}`: `{v}`" for k, v in training.items() if k not in ("data", "run")]
    data = training.get("data")
    if isinstance(data, dict):
        lines.insert(0, f"- data: {_data_line(data)}")
    return "\n".join(lines)


def render_model_card(config: dict, metrics: dict, *, files: Sequence[str] = ()) -> str:
    """The full README.md of a bundle. Pure: data in, text out."""
    name = model_name(config)
    labels = list(config["labels"])
    pictures = [
        f"![{title}]({f})" for f, title in
        (("curves.png", "Training curves"), ("confusion_matrix.png", "Confusion matrix"),
         ("samples.png", "Sample predictions")) if f in files
    ]
    has_onnx = "model.onnx" in files or "model.int8.onnx" in files
    training = config.get("training") or {}
    members = config.get("members") or ()
    if members:
        network = (f"An ensemble that averages the class probabilities of {len(members)} networks: "
                   + "; ".join(f"`{m['backbone']}` at {m['image_size']} px ({m.get('name', 'member')})" for m in members)
                   + f". Input {config['image_size']}x{config['image_size']} px, resized inside the network "
                   "to each member's size; each member is global average pooling, dropout and a softmax "
                   f"over {len(labels)} classes on its backbone.")
        retrain = ("train each member with its own options (above; the bundled models have presets: "
                   "`sports-classifier train --data PATH/TO/DATASET --preset NAME --out DIR`), then "
                   "`sports-classifier ensemble --models MEMBER... --data PATH/TO/DATASET --out DIR`")
    else:
        network = (f"Backbone: `{config['backbone']}` at {config['image_size']}x{config['image_size']} px"
                   f"{', with horizontal-flip test-time augmentation' if config.get('tta_flip') else ''}; "
                   f"head: global average pooling, dropout {config.get('dropout')}, softmax over {len(labels)} classes.")
        retrain = (f"`sports-classifier train --data PATH/TO/DATASET --backbone {config['backbone']} --out DIR` "
                   "with the same options (or `--preset` of the bundled model)")
    return f"""---
{front_matter(config, metrics).strip()}
---

# {name}

Recognises the sport in a photo among the {len(labels)} classes of the
[{DATASET_NAME}]({DATASET_URL}) dataset. {network}
Trained with the `sports_classifier` package (Keras 3). {'An ONNX export serves without TensorFlow.' if has_onnx else ''}

## Metrics

{_metrics_table(metrics)}

Measured when the bundle was made (`sports-classifier evaluate` gives the same figures with the
same engine; an int8 model added later can differ by an image or two: check it with
`evaluate --runtime onnx-int8`). The `valid` split has only 5 images per class, so one image is
0.2 points of accuracy.

## Usage

```python
from sports_classifier import Classifier

clf = Classifier.from_pretrained("path/or/user-repo")
clf.predict("photo.jpg", top_k=5)   # [[("basketball", 0.97), ...]]
```

```bash
sports-classifier predict --model path/or/user-repo photo.jpg
```

Input: any RGB/grayscale/RGBA photo; it is converted to RGB and resized (bilinear) to
{config['image_size']}x{config['image_size']}; pixel scaling happens inside the network.

## Training data and recipe

{_recipe(training)}

To retrain on the full dataset ({FULL_TRAIN_IMAGES:,} training images), download it from Kaggle and
{retrain}.

## Labels

<details><summary>{len(labels)} classes, in output order</summary>

{', '.join(labels)}

</details>

## Limitations

- Only the {len(labels)} sports above: any photo gets one of them. A low top probability
  means the photo probably shows none of them.
- The dataset's photos are centred, cropped action shots at 224x224; unusual framings,
  illustrations or several sports in one picture are out of distribution.
- Class names are the dataset's own, misspellings included ("barell racing").

{chr(10).join(pictures)}
"""
