"""Sports classifier: the Gradio app (composition only; the handlers live in sports_classifier.app).

    python app.py                                  # the bundled models in models/, offline
    python app.py --models models/a,hf:user/repo@rev --host 0.0.0.0 --port 7860
    SPORTS_CLASSIFIER_MODELS=hf:user/repo python app.py    # e.g. in a Space's settings

No model is loaded at import: each loads on first use, and all of them in a background thread
right after the server starts. With ONNX bundles nothing here imports TensorFlow; only the
Explain button (Grad-CAM) loads Keras, the first time it is pressed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from sports_classifier.app import about, batch, compare, data_view, examples, mistakes, uploads
from sports_classifier.app.client_address import ClientAddress
from sports_classifier.app import predict as predict_tab
from sports_classifier.app.registry import ModelRegistry
from sports_classifier.errors import UserInputError
from sports_classifier.hub import MODELS_ENV, served_models

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MAX_FILE_SIZE = "10mb"
# ONNX Runtime already spreads one prediction over every core, so running more than two at
# once only makes each slower; further requests wait in the queue (at most QUEUE_SIZE).
CONCURRENCY = 2
QUEUE_SIZE = 64
GRID_SIZE = 20
TITLE = "Sports classifier"
CACHE_CLEANUP = (3600, 3600)  # (how often, how old) in seconds: gr.Blocks(delete_cache=...)
GRIDS = Path(tempfile.gettempdir()) / "sports-classifier-grids"
BATCHES = Path(tempfile.gettempdir()) / "sports-classifier-batches"
# Where a request may point the decoder: Gradio's upload folder (uploads, and examples once
# clicked, which Gradio copies there) and the example photos (app.uploads).
UPLOAD_FOLDER = get_upload_folder()
UPLOAD_ROOTS = (UPLOAD_FOLDER, str(EXAMPLES))
RATE = uploads.RateLimiter()
_last_prune = [0.0]
CHARTS = Path(tempfile.gettempdir()) / "sports-classifier-compare"  # drawn once per server, reused
CSS = """
.result-note {min-height: 2.5em; font-size: 0.9em}
"""


def _handler(fn):
    """Show a UserInputError as a message in the page instead of a generic failure."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserInputError as exc:
            raise gr.Error(str(exc)) from None

    return wrapped


def _photo_path(image):
    """The uploaded photo's file path. The predict and explain events skip Gradio's own image
    decoding (``preprocess=False``), so every upload goes through the package's one decode
    path: its decompression-bomb guard and readable errors, and 16-bit / RGBA / CMYK photos
    converted exactly as in training. Gradio then does not check the path either: only files
    inside the upload folder are accepted (``uploads.uploaded_file``)."""
    return uploads.uploaded_file(image, UPLOAD_ROOTS)


def _admit(request: gr.Request | None) -> None:
    """Per-client request rate, and the upload cache kept within its disk budget (checked at
    most every 30 s: it walks the folder)."""
    RATE.check(CLIENT(request))  # behind a known proxy: the forwarded client address
    if time.time() - _last_prune[0] > 30:
        _last_prune[0] = time.time()
        uploads.prune_cache(UPLOAD_FOLDER)


def _prune(folder: Path, max_age: float = CACHE_CLEANUP[1]) -> None:
    """Delete what the app wrote into ``folder`` more than ``max_age`` seconds ago. Gradio serves
    its own copy of a returned file, so only the last hour's grids and CSVs are kept."""
    if not folder.is_dir():
        return
    cutoff = time.time() - max_age
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:  # another request pruned it first
            pass


def _servable(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Gradio only sends files from the working folder, the temp folder or allowed_paths;
    pictures of Hub bundles live in the Hub cache, so they are copied to the temp folder."""
    out = []
    for path, caption in items:
        p = Path(path).resolve()
        if not (p.is_relative_to(Path.cwd()) or p.is_relative_to(ROOT) or p.is_relative_to(tempfile.gettempdir())):
            digest = hashlib.sha256(str(p).encode()).hexdigest()[:16]
            dest = Path(tempfile.gettempdir()) / "sports-classifier-pictures" / f"{digest}-{p.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(p, dest)
            p = dest
        out.append((str(p), caption))
    return out


def _servable_paths(paths: list[str | None]) -> list[str | None]:
    """``_servable`` for single optional paths (a bundle's pictures may be in the Hub cache)."""
    return [_servable([(p, "")])[0][0] if p else None for p in paths]


def allowed_paths(registry: ModelRegistry) -> list[str]:
    """Only the example images and the local bundles' pictures (for the model cards)."""
    return ([str(EXAMPLES)] if EXAMPLES.is_dir() else []) + about.picture_files(registry)


def prepare_compare(registry: ModelRegistry) -> None:
    """Draw the Compare tab's charts once, after the models load, so that opening Compare only
    reads caches (run in a background thread). The example images are predicted only when
    Compare is first opened: at start-up that work would slow the first users' predictions."""
    specs = [compare.speed_spec(registry, CHARTS), data_view.distribution_spec(data_view.recorded_data(registry), CHARTS)]
    specs += [compare.curves_spec(registry, name, CHARTS) for name in registry.names]
    try:  # a nice'd child process: matplotlib never holds this interpreter or takes the CPUs
        subprocess.run([sys.executable, "-m", "sports_classifier.app.draw"], input=json.dumps([s for s in specs if s]),
                       text=True, cwd=ROOT, timeout=600, check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:  # then each chart is drawn when first shown
        print(f"drawing the Compare charts ahead failed: {exc}", file=sys.stderr)


def build_demo(registry: ModelRegistry, cache: mistakes.MistakesCache | None = None) -> gr.Blocks:
    names = registry.names
    cache = cache or mistakes.MistakesCache(registry, EXAMPLES)

    default_models = names if len(names) <= 3 else names[:1]
    sports = examples.example_sports(EXAMPLES)
    first = names[0] if names else None

    def slots(prefix: str):
        labels, notes = [], []
        with gr.Row(equal_height=False):
            for name in names:
                with gr.Column(min_width=220):
                    labels.append(gr.Label(label=name, num_top_classes=predict_tab.TOP_K, visible=name in default_models,
                                           elem_id=f"{prefix}-label-{len(labels)}"))
                    notes.append(gr.Markdown(elem_classes="result-note", visible=name in default_models))
        return labels, notes

    def slot_values(results: list[predict_tab.ModelResult], selected: list[str]):
        by_name = {r.name: r for r in results}
        labels, notes = [], []
        for name in names:
            r = by_name.get(name)
            shown = name in selected
            labels.append(gr.Label(value=(r.confidences or None) if r else None, visible=shown))
            notes.append(gr.Markdown(value=r.note if r else "", visible=shown))
        return labels + notes

    # -- handlers bound to this registry (plain functions from ui, errors shown in the page) --

    @_handler
    def on_predict(image, selected, request: gr.Request):
        _admit(request)
        image = _photo_path(image)
        if image is None:
            return slot_values([], selected or []) + [predict_tab.status_markdown(registry)]
        results = predict_tab.predict(registry, image, selected)
        return slot_values(results, selected) + [predict_tab.status_markdown(registry)]

    @_handler
    def on_explain(image, model, request: gr.Request):
        _admit(request)
        return predict_tab.explain(registry, _photo_path(image), model)

    def visible_slots(selected):
        return [gr.Label(visible=n in selected) for n in names] + [gr.Markdown(visible=n in selected) for n in names]

    def on_filter(sport):
        found = examples.list_examples(EXAMPLES, sport)
        return gr.Gallery(value=examples.gallery_items(found, one_per_class=sport in (None, examples.ALL_SPORTS)),
                          selected_index=None)

    @_handler
    def on_example(sport, selected, evt: gr.SelectData):
        found = examples.list_examples(EXAMPLES, sport)
        if sport in (None, examples.ALL_SPORTS):
            found = [examples.Example(p, c) for p, c in examples.gallery_items(found, one_per_class=True)]
        example = found[evt.index]
        selected = selected or names[:1]  # the models ticked on the Predict tab
        results = predict_tab.predict(registry, example.path, selected)
        return [example.path, f"True sport: **{example.label}**"] + slot_values(results, selected)

    @_handler
    def on_grid(model, sport, seed):
        _prune(GRIDS)
        grid = examples.example_grid(registry, model, examples.list_examples(EXAMPLES, sport), n=GRID_SIZE, seed=seed,
                               out_dir=GRIDS)
        return grid["image"], grid["summary"], seed + 1

    # Compare opens in three steps, so that the chart and the table show first (each reads caches).
    def on_compare():
        return [compare.speed_chart(registry, CHARTS), compare.compare_table(registry)[compare.COMPARE_COLUMNS],
                compare.architectures_markdown(registry), predict_tab.status_markdown(registry)]

    def on_compare_details():
        records = data_view.recorded_data(registry)
        curves_out = [compare.curves_picture(registry, name, CHARTS) for name in names]
        return [*_servable_paths(curves_out), compare.disagreement_table(registry), data_view.data_markdown(records),
                data_view.distribution_chart(records, CHARTS), data_view.sample_items(EXAMPLES)]

    def on_mistakes(model, sport):
        if not model:
            return [[], None, [], None, "", gr.Dropdown(), None, gr.Timer(active=False)]
        results = cache.get(model)
        if results is None:
            cache.start(first=model)  # then the timer asks again until it is there
        cm, labels = mistakes.model_confusion(registry, model)
        pairs = mistakes.confused_pairs(cm, labels)
        downloads = []
        entry = registry.entry(model)
        if entry.ok:
            picture = Path(entry.classifier.path) / "confusion_matrix.png"
            if picture.is_file():
                downloads.append(_servable([(str(picture), model)])[0][0])
            if cm:
                safe = hashlib.sha256(f"{entry.classifier.path}".encode()).hexdigest()[:12]
                downloads.append(str(mistakes.write_confusion_csv(cm, labels, CHARTS / safe / "confusion_matrix.csv")))
        sports_with = mistakes.mistake_sports(results)
        sport = sport if sport in sports_with else examples.ALL_SPORTS
        return [_servable(mistakes.pair_examples(pairs, results, EXAMPLES)), mistakes.pairs_table(pairs),
                _servable(mistakes.mistakes_gallery(results, sport)), mistakes.mistakes_table(results, sport),
                mistakes.mistakes_summary(results, model),
                gr.Dropdown(choices=[examples.ALL_SPORTS] + sports_with, value=sport), downloads or None,
                gr.Timer(active=results is None)]

    @_handler
    def on_batch(files, selected, request: gr.Request):
        _admit(request)
        files = uploads.uploaded_files(files, UPLOAD_ROOTS)
        _prune(BATCHES)
        BATCHES.mkdir(parents=True, exist_ok=True)
        frame, csv_path = batch.batch_predict(registry, files, selected,
                                           out_dir=tempfile.mkdtemp(prefix="batch-", dir=BATCHES))
        return frame, gr.DownloadButton(value=csv_path, visible=True)

    def on_status():
        pending = any(registry.loaded(n) is None for n in names)
        return predict_tab.status_markdown(registry), gr.Timer(active=pending)

    # -- layout --

    # Uploads and returned files pile up in Gradio's cache: every hour, drop those over an hour old.
    with gr.Blocks(title=TITLE, analytics_enabled=False, fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(f"# {TITLE}\nWhich of 100 sports does a photo show? Upload, paste or take a photo.")
        status = gr.Markdown(predict_tab.status_markdown(registry), elem_id="model-status")
        timer = gr.Timer(2.0, active=bool(names))

        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=300):
                        image = gr.Image(type="pil", sources=["upload", "clipboard", "webcam"], label="Photo",
                                         height=340, elem_id="photo")
                        chosen = gr.CheckboxGroup(names, value=default_models, label="Models")
                        with gr.Row():
                            predict_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
                            explain_btn = gr.Button("Explain", elem_id="explain-button")
                        explain_model = gr.Dropdown(names, value=first, label="Model to explain")
                        if EXAMPLES.is_dir():
                            picks = [e.path for e in examples.list_examples(EXAMPLES)][::40][:5]
                            gr.Examples(picks, inputs=image, label="Try one", cache_examples=False)
                    with gr.Column(scale=3):
                        labels, notes = slots("predict")
                        heatmap = gr.Image(label="Class activation map", interactive=False, height=340,
                                           elem_id="heatmap")
                        heat_caption = gr.Markdown()

            with gr.Tab("Examples", id="examples"):
                with gr.Row():
                    with gr.Column(scale=3):
                        sport = gr.Dropdown([examples.ALL_SPORTS] + sports, value=examples.ALL_SPORTS, label="Sport",
                                            info="All sports: one photo each; pick a sport to see all its photos")
                        gallery = gr.Gallery(examples.gallery_items(examples.list_examples(EXAMPLES), one_per_class=True),
                                             label="Examples (click one to predict it)", columns=6, height=480,
                                             allow_preview=False, elem_id="examples-gallery")
                    with gr.Column(scale=2):
                        chosen_example = gr.Image(label="Selected", type="filepath", interactive=False, height=220)
                        true_label = gr.Markdown()
                        ex_labels, ex_notes = slots("examples")
                gr.Markdown("### Predictions on example images\nEach photo is titled with its true and "
                            "predicted sport; wrong predictions are in red. Uses the sport filter above.")
                with gr.Row():
                    grid_model = gr.Dropdown(names, value=first, label="Model", scale=2)
                    grid_btn = gr.Button(f"Predict {GRID_SIZE} examples (click again for others)", scale=1)
                grid_seed = gr.State(0)
                grid_summary = gr.Markdown()
                grid = gr.Image(label="Predictions on example images", show_label=False, type="filepath",
                                interactive=False, elem_id="examples-grid", buttons=["fullscreen", "download"])

            with gr.Tab("Compare", id="compare") as compare_tab:
                refresh_btn = gr.Button("Refresh", size="sm")
                with gr.Row(equal_height=False):
                    speed = gr.Image(label="Validation accuracy vs speed on this server", type="filepath",
                                     show_label=False, interactive=False, height=380, scale=3, elem_id="compare-speed",
                                     buttons=["fullscreen", "download"])
                    gr.Markdown(compare.CHART_NOTE, elem_id="compare-chart-note")
                metrics = gr.Dataframe(label="Measured metrics (validation split)", interactive=False,
                                       elem_id="compare-table", max_height=260)
                gr.Markdown(compare.SPEED_NOTE)
                with gr.Accordion("Architectures (full text)", open=False):
                    arch_md = gr.Markdown()
                gr.Markdown("### Where each model goes wrong")
                with gr.Row():
                    mistake_model = gr.Dropdown(names, value=first, label="Model", scale=2)
                    mistake_sport = gr.Dropdown([examples.ALL_SPORTS], value=examples.ALL_SPORTS, scale=2,
                                                label="True sport (mistakes browser filter)")
                mistake_note = gr.Markdown(elem_id="compare-mistakes-note")
                mistakes_timer = gr.Timer(2.0, active=False)  # while the example images are being predicted
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2):
                        gr.Markdown("**Most-confused pairs** on the validation split: true → predicted, "
                                    "how many (click an image for its caption)")
                        pairs_gallery = gr.Gallery(label="Most-confused pairs", show_label=False, columns=3,
                                                   height=330, allow_preview=True, elem_id="compare-pairs")
                        pairs_table = gr.Dataframe(label="Most-confused pairs (validation split)",
                                                   interactive=False, max_height=220)
                        confusion_files = gr.File(label="Full confusion matrix (PNG, CSV)", file_count="multiple",
                                                  interactive=False, elem_id="compare-confusion-files")
                    with gr.Column(scale=3):
                        gr.Markdown("**Mistakes browser**: the example images this model gets wrong, "
                                    "with the true class and its top-3 (table below)")
                        mistakes_gallery = gr.Gallery(label="Mistakes browser", show_label=False, columns=4,
                                                      height=400, allow_preview=True, elem_id="compare-mistakes")
                        mistakes_table = gr.Dataframe(label="The same mistakes, in order: true class and top-3",
                                                      interactive=False, max_height=300, wrap=True,
                                                      elem_id="compare-mistakes-table")
                gr.Markdown("### Training curves")
                curves = []
                for name in names:
                    gr.Markdown(f"**{name}**: accuracy and loss per epoch, each training stage shaded")
                    curves.append(gr.Image(label=f"{name}: accuracy and loss per epoch", type="filepath",
                                           show_label=False, interactive=False, buttons=["fullscreen", "download"],
                                           elem_id=f"compare-curves-{len(curves)}"))
                disagree = gr.Dataframe(label="Per-class accuracy (recall) where the models disagree most "
                                        "(with one model: its weakest classes)", interactive=False)
                gr.Markdown("### The data the models learned from")
                data_md = gr.Markdown(elem_id="compare-data")
                with gr.Row(equal_height=False):
                    distribution = gr.Image(label="Class distribution (from the bundles' training record)",
                                            type="filepath", interactive=False, scale=3,
                                            buttons=["fullscreen", "download"], elem_id="compare-distribution")
                    samples = gr.Gallery(label="Sample photos (the app's examples, from the validation split)",
                                         columns=4, height=420, scale=2, allow_preview=True, elem_id="compare-samples")

            with gr.Tab("Batch", id="batch"):
                files = gr.File(file_count="multiple", file_types=["image"], label="Images",
                                elem_id="batch-files")
                batch_models = gr.CheckboxGroup(names, value=names[:1], label="Models")
                batch_btn = gr.Button("Predict all", variant="primary")
                batch_table = gr.Dataframe(label="Predictions", interactive=False, wrap=True)
                download = gr.DownloadButton("Download CSV", visible=False)

            with gr.Tab("About", id="about"):
                gr.Markdown(about.about_markdown(registry))
                for source in registry.sources:
                    if not source.hub:
                        with gr.Accordion(f"Model card: {source.name}", open=False):
                            gr.Markdown(about.model_card_markdown(source.location))

        # -- events --
        predict_outputs = labels + notes + [status]
        gr.on([predict_btn.click, image.change], on_predict, [image, chosen], predict_outputs,
              api_name="predict", trigger_mode="always_last", preprocess=False)
        # a new photo makes the previous heatmap stale
        image.change(lambda: (None, ""), None, [heatmap, heat_caption], api_visibility="private",
                     show_progress="hidden", queue=False)
        chosen.change(visible_slots, chosen, labels + notes, api_visibility="private")
        explain_btn.click(on_explain, [image, explain_model], [heatmap, heat_caption], api_name="explain",
                          concurrency_limit=1, concurrency_id="explain", preprocess=False)
        sport.change(on_filter, sport, gallery, api_visibility="private")
        gallery.select(on_example, [sport, chosen], [chosen_example, true_label] + ex_labels + ex_notes,
                       api_visibility="private")
        grid_btn.click(on_grid, [grid_model, sport, grid_seed], [grid, grid_summary, grid_seed], api_name="grid")
        mistake_outputs = [pairs_gallery, pairs_table, mistakes_gallery, mistakes_table, mistake_note, mistake_sport,
                           confusion_files, mistakes_timer]
        compare_outputs = [speed, metrics, arch_md, status]
        details_outputs = [*curves, disagree, data_md, distribution, samples]
        for trigger, api in ((compare_tab.select, None), (refresh_btn.click, "compare")):
            visibility = {"api_name": api} if api else {"api_visibility": "private"}
            (trigger(on_compare, None, compare_outputs, **visibility)
             .then(on_compare_details, None, details_outputs, **({"api_name": api + "_details"} if api else visibility))
             .then(on_mistakes, [mistake_model, mistake_sport], mistake_outputs,
                   **({"api_name": "mistakes"} if api else visibility)))
        gr.on([mistake_model.input, mistake_sport.input, mistakes_timer.tick], on_mistakes, [mistake_model, mistake_sport],
              mistake_outputs, api_visibility="private")
        batch_btn.click(on_batch, [files, batch_models], [batch_table, download], api_name="batch",
                        concurrency_limit=1, concurrency_id="batch")
        timer.tick(on_status, None, [status, timer], api_visibility="private", show_progress="hidden")

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.mistakes_cache = cache
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the sports classifier app.")
    parser.add_argument("--models", help=f"comma-separated bundle folders and hf:user/repo[@rev] "
                        f"(default: ${MODELS_ENV}, else every bundle in models/, models/DEFAULT first)")
    parser.add_argument("--host", help="address to listen on (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", choices=("no", "yes"), default="no", help="a public gradio.live link")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS[/BITS]",
                        help="a reverse proxy in front of the app (repeatable): the rate limit then keys on "
                             "the client address it forwards (X-Forwarded-For), never otherwise; on a "
                             "Hugging Face Space (SYSTEM=spaces) the Space's proxy is trusted without it")
    return parser.parse_args(argv)


def make_registry(models: str | None = None) -> ModelRegistry:
    """--models (relative to the working folder), else $SPORTS_CLASSIFIER_MODELS, else models/."""
    if models:
        return ModelRegistry(served_models(models, root=Path.cwd()))
    return ModelRegistry(served_models(root=ROOT))


def launch(demo: gr.Blocks, registry: ModelRegistry, args: argparse.Namespace) -> None:
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share == "yes",
        max_file_size=MAX_FILE_SIZE, allowed_paths=allowed_paths(registry), ssr_mode=False,
        theme=gr.themes.Soft(), css=CSS, footer_links=["api"], prevent_thread_lock=True,
    )
    # uploads left by earlier runs (Gradio's own cleanup covers only this process's files)
    uploads.prune_cache(UPLOAD_FOLDER, max_age=CACHE_CLEANUP[1])
    loading = registry.warm_up()  # the page already serves; the first prediction then finds models ready
    # then the Compare tab's charts and example predictions, so that opening it reads caches
    threading.Thread(target=lambda: (loading.join(), prepare_compare(registry)),
                     name="prepare-compare", daemon=True).start()
    demo.block_thread()


# Spaces (and `gradio app.py`) look for `demo` here. Run as a script, the flags are read first
# so that the UI is built once, for the models asked for. No model loads here.
ARGS = parse_args() if __name__ == "__main__" else None
CLIENT = ClientAddress.from_environment(ARGS.trusted_proxy if ARGS else ())
registry = make_registry(ARGS.models if ARGS else None)
demo = build_demo(registry)

if __name__ == "__main__":
    launch(demo, registry, ARGS)
