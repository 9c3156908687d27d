"""Export sources: Ultralytics, torchvision, timm, ONNX files, published checkpoints, MLflow URIs."""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib

import pytest
from conftest import EXPORT_IMGSZ, lively_state_dict

from edge.errors import ExportError, MissingExtraError
from edge.inference.card import read_card, sha256_file
from edge.inference.onnxmeta import write_metadata
from export.sources import load_labels, open_source

torch = pytest.importorskip("torch")


def _load(source, **options):
    with open_source(str(source), **options) as loaded:
        return loaded


# -- torchvision ----------------------------------------------------------------------------------
def test_torchvision_state_dict_nested_and_prefixed(tmp_path):
    weights = lively_state_dict("resnet18", 3, tmp_path / "trained.ckpt", wrap=True)
    loaded = _load(weights, kind="classify", arch="resnet18", labels=["a", "b", "c"])
    assert loaded.framework == "torchvision" and loaded.arch == "resnet18" and loaded.dynamic_batch
    card = loaded.card
    assert card.task == "classify" and card.labels == ["a", "b", "c"]
    assert card.source.file == "trained.ckpt" and card.source.sha256 == sha256_file(weights)
    assert card.preprocess.resize == "centre_crop" and card.preprocess.input_size == (224, 224)
    out = loaded.module(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 3)


def test_torchvision_preprocessing_follows_the_arch_and_the_options(tmp_path):
    weights = lively_state_dict("efficientnet_b0", 2, tmp_path / "e.pth")
    card = _load(weights, kind="classify", arch="efficientnet_b0", labels=["x", "y"], imgsz=192,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).card
    assert card.preprocess.input_size == (192, 192) and card.preprocess.crop_ratio == pytest.approx(224 / 256)
    assert card.preprocess.mean == (0.5, 0.5, 0.5) and card.preprocess.std == (0.25, 0.25, 0.25)


def test_unknown_torchvision_architecture_lists_close_names(tmp_path):
    weights = lively_state_dict("resnet18", 2, tmp_path / "r.pth")
    close = r"unknown torchvision architecture 'resnet81'; close names: .*resnet18"
    with pytest.raises(ExportError, match=close):
        _load(weights, kind="classify", arch="resnet81", labels=["a", "b"])


def test_checkpoint_not_matching_the_architecture(tmp_path):
    weights = lively_state_dict("resnet18", 2, tmp_path / "r.pth")
    with pytest.raises(ExportError, match=r"not match torchvision resnet34 .*missing keys \(layer1\.2\."):
        _load(weights, kind="classify", arch="resnet34", labels=["a", "b"])
    with pytest.raises(ExportError, match=r"shape mismatches \(fc\.weight checkpoint \[2, 512\] vs model "
                                          r"\[3, 512\].*the labels file has 3 names"):
        _load(weights, kind="classify", arch="resnet18", labels=["a", "b", "c"])
    with pytest.raises(ExportError, match=r"unexpected keys"):
        _load(weights, kind="classify", arch="mobilenet_v3_small", labels=["a", "b"])


def test_pickled_module_and_garbage_are_refused(tmp_path):
    import torchvision

    pickled = tmp_path / "whole.pt"
    torch.save(torchvision.models.get_model("resnet18", weights=None, num_classes=2), pickled)
    with pytest.raises(ExportError, match="not a plain state dict"):
        _load(pickled, kind="classify", arch="resnet18", labels=["a", "b"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot read .*garbage.pth as a PyTorch state dict"):
        _load(garbage, kind="classify", arch="resnet18", labels=["a", "b"])
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(ExportError, match="holds no state dict"):
        _load(empty, kind="classify", arch="resnet18", labels=["a", "b"])


def test_classifier_needs_arch_and_labels(tmp_path):
    weights = lively_state_dict("resnet18", 2, tmp_path / "r.pth")
    with pytest.raises(ExportError, match="needs its architecture: --arch"):
        _load(weights, kind="classify", labels=["a", "b"])
    with pytest.raises(ExportError, match=r"needs its labels \(--labels FILE\)"):
        _load(weights, kind="classify", arch="resnet18")


@pytest.mark.parametrize(("content", "suffix", "message"), [
    ("", ".txt", "empty or has a blank label"),
    ("fox\n\ndeer\n", ".txt", "blank label"),
    ("{not json", ".json", "not valid JSON"),
    ('{"0": "fox", "2": "deer"}', ".json", "without gaps"),
])
def test_labels_file_that_does_not_parse(tmp_path, content, suffix, message):
    path = tmp_path / f"labels{suffix}"
    path.write_text(content)
    with pytest.raises(ExportError, match=message):
        load_labels(path)
    with pytest.raises(ExportError, match="labels file not found"):
        load_labels(tmp_path / "missing.txt")


# -- timm -----------------------------------------------------------------------------------------
def test_timm_model_with_its_own_data_config(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4)
    weights = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, weights)
    loaded = _load(weights, kind="classify", arch="timm/mobilenetv3_small_050", labels=list("abcd"))
    assert loaded.framework == "timm" and loaded.arch == "mobilenetv3_small_050"
    assert loaded.card.preprocess.input_size == (224, 224) and loaded.card.preprocess.crop_ratio == 0.875
    with pytest.raises(ExportError, match=r"unknown timm architecture 'mobilenetv3_smal_050'; close names: "
                                          r".*mobilenetv3_small_050"):
        _load(weights, kind="classify", arch="timm/mobilenetv3_smal_050", labels=list("abcd"))
    with pytest.raises(ExportError, match="does not match timm mobilenetv3_small_100"):
        _load(weights, kind="classify", arch="timm/mobilenetv3_small_100", labels=list("abcd"))


# -- Ultralytics ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "decoder", "notes"), [
    ("yolov8n.yaml", "ultralytics", 1),
    ("yolo11n.yaml", "ultralytics", 1),
    ("yolov5nu.yaml", "ultralytics", 1),
    ("yolov10n.yaml", "e2e", 1),
])
def test_ultralytics_yaml_picks_the_decoder_from_the_head(ultralytics_offline, source, decoder, notes):
    loaded = _load(source, kind="detect", imgsz=EXPORT_IMGSZ)
    assert loaded.framework == "ultralytics" and loaded.kind == "detect"
    assert loaded.card.decoder.name == decoder and loaded.card.preprocess.resize == "letterbox_centre"
    assert loaded.card.labels[:2] == ["person", "bicycle"] and len(loaded.notes) == notes
    with torch.inference_mode():
        out = loaded.module(torch.zeros(1, 3, EXPORT_IMGSZ, EXPORT_IMGSZ))
    assert tuple(out.shape) == ((1, 300, 6) if decoder == "e2e" else (1, 84, 2100))


def test_yolov10_one_to_many_head_when_asked(ultralytics_offline):
    from export.sources import ultralytics

    loaded = ultralytics.load("yolov10n.yaml", imgsz=EXPORT_IMGSZ, end2end=False)
    assert loaded.card.decoder.name == "ultralytics" and "one-to-many" in loaded.notes[-1]
    with torch.inference_mode():
        assert tuple(loaded.module(torch.zeros(1, 3, EXPORT_IMGSZ, EXPORT_IMGSZ)).shape) == (1, 84, 2100)


def _save_checkpoint(path, yaml="yolov8n.yaml", nc=None, names=None):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(yaml, nc=nc, verbose=False)
    if names:
        model.names = dict(enumerate(names))
    torch.save({"model": model, "train_args": {"imgsz": EXPORT_IMGSZ}, "epoch": -1}, path)
    return path


def test_ultralytics_checkpoint_names_and_imgsz(ultralytics_offline, tmp_path):
    pt = _save_checkpoint(tmp_path / "md.pt", nc=3, names=["animal", "person", "vehicle"])
    loaded = _load(pt, kind="detect")
    assert loaded.card.labels == ["animal", "person", "vehicle"]
    assert loaded.card.preprocess.input_size == (EXPORT_IMGSZ, EXPORT_IMGSZ)  # from train_args
    assert loaded.card.source.file == "md.pt" and loaded.card.source.sha256 == sha256_file(pt)
    renamed = _load(pt, kind="detect", labels=["a", "b", "c"], imgsz=256)
    assert renamed.card.labels == ["a", "b", "c"] and renamed.input_size == (256, 256)
    with pytest.raises(ExportError, match="the labels file has 2 names but md.pt has 3 classes"):
        _load(pt, kind="detect", labels=["a", "b"])
    with pytest.raises(ExportError, match="--imgsz 300 must be a positive multiple of the model's stride 32"):
        _load(pt, kind="detect", imgsz=300)


def test_a_yolov5_named_checkpoint_loads_as_is(ultralytics_offline, tmp_path):
    # Ultralytics would look for yolov5nu.pt instead, and try to download it.
    pt = _save_checkpoint(tmp_path / "yolov5n.pt", yaml="yolov5nu.yaml")
    loaded = _load(pt, kind="detect")
    assert loaded.card.source.file == "yolov5n.pt" and loaded.card.decoder.name == "ultralytics"
    assert not (tmp_path / "yolov5nu.pt").exists()


def test_ultralytics_bad_sources(ultralytics_offline, tmp_path):
    with pytest.raises(ExportError, match="neither a file nor a built-in Ultralytics config"):
        _load("yolov99n.yaml", kind="detect")
    with pytest.raises(ExportError, match="is an Ultralytics segment model"):
        _load("yolov8n-seg.yaml", kind="detect")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match="cannot load .*broken.pt as an Ultralytics checkpoint"):
        _load(broken, kind="detect")
    with pytest.raises(ExportError, match="a detector source is an Ultralytics .pt or .yaml"):
        _load(lively_state_dict("resnet18", 2, tmp_path / "r.pth"), kind="detect")


# -- ONNX files -----------------------------------------------------------------------------------
def _plain_onnx(path, size=64):
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.warns(DeprecationWarning):  # the legacy exporter's notice, outside our wrapper here
        torch.onnx.export(Tiny(), (torch.zeros(1, 3, size, size),), str(path), input_names=["images"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    return path


def test_onnx_without_card_needs_preset_and_labels(tmp_path):
    plain = _plain_onnx(tmp_path / "plain.onnx")
    with pytest.raises(ExportError, match="has no model card and no Ultralytics metadata: pass --preset"):
        _load(plain, kind="classify")
    with pytest.raises(ExportError, match="needs --labels FILE"):
        _load(plain, kind="classify", preset="imagenet")
    with pytest.raises(ExportError, match="unknown preset 'imagenett'"):
        _load(plain, kind="classify", preset="imagenett", labels=["r", "g", "b"])
    loaded = _load(plain, kind="classify", preset="imagenet", labels=["r", "g", "b"])
    assert loaded.card.preprocess.input_size == (64, 64) and loaded.module is None
    with pytest.raises(ExportError, match="is a classify model, not a detector"):
        _load(plain, kind="detect", preset="imagenet", labels=["r", "g", "b"])
    with pytest.raises(ExportError, match="--preset is for ONNX sources"):
        _load(lively_state_dict("resnet18", 2, tmp_path / "r.pth"), kind="classify", arch="resnet18",
              labels=["a", "b"], preset="imagenet")


def test_onnx_with_ultralytics_metadata_is_kept(tmp_path):
    plain = _plain_onnx(tmp_path / "plain.onnx")
    meta = {"names": "{0: 'animal', 1: 'person', 2: 'vehicle'}", "imgsz": "[64, 64]", "task": "detect",
            "end2end": "True", "description": "Ultralytics YOLOv10n"}
    ultra = write_metadata(plain, tmp_path / "ultra.onnx", meta)
    loaded = _load(ultra, kind="detect")
    assert loaded.card.decoder.name == "e2e" and loaded.card.labels == ["animal", "person", "vehicle"]
    assert loaded.card.source.sha256 == sha256_file(ultra)


# -- published checkpoints ------------------------------------------------------------------------
def test_packaged_table_is_valid_and_pins_or_refuses():
    from export.sources import published

    table = published.load_table()
    assert {"mdv6-yolov10-c", "mdv6-yolov9-c", "mdv6-rtdetr-c"} <= set(table)
    assert all(e.url.startswith("https://") and e.framework == "ultralytics" for e in table.values())
    assert len(table["mdv6-yolov10-c"].sha256) == 64 and table["mdv6-yolov9-c"].sha256 == ""
    with pytest.raises(ExportError, match="mdv6-yolov9-c has no pinned sha256 .* will not download"):
        published.fetch("mdv6-yolov9-c", cache_dir="/nonexistent-never-written")


@pytest.fixture()
def mirror():
    from test_registry import Mirror

    server = Mirror()
    try:
        yield server
    finally:
        server.stop()


def _table(tmp_path, mirror, name, file, sha256, **extra):
    path = tmp_path / "published.toml"
    lines = [f"[models.{name}]", f'url = "{mirror.url("/files/" + file.name)}"', f'sha256 = "{sha256}"',
             f'file = "{file.name}"'] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_published_checkpoint_is_downloaded_once_and_verified(ultralytics_offline, tmp_path, mirror):
    pt = _save_checkpoint(tmp_path / "MDV6-test.pt", nc=3, names=["animal", "person", "vehicle"])
    mirror.routes["/files/MDV6-test.pt"] = pt
    table = _table(tmp_path, mirror, "mdv6-test", pt, sha256_file(pt), framework="ultralytics")
    cache = tmp_path / "cache"
    with open_source("mdv6-test", kind="detect", table=table, cache_dir=cache) as loaded:
        assert loaded.card.labels == ["animal", "person", "vehicle"]
        assert loaded.card.source.url == mirror.url("/files/MDV6-test.pt")
        assert loaded.card.source.sha256 == sha256_file(pt)
    assert (cache / "checkpoints" / "mdv6-test" / "MDV6-test.pt").is_file()
    with open_source("mdv6-test", kind="detect", table=table, cache_dir=cache):
        pass
    assert len(mirror.requests) == 1  # the second use is served from the cache
    with (pytest.raises(ExportError, match="mdv6-test is a detector: use 'wildedge export detector'"),
          open_source("mdv6-test", kind="classify", table=table, cache_dir=cache)):
        pass


def test_published_sha256_mismatch_and_network_failure(tmp_path, mirror):
    weights = lively_state_dict("resnet18", 2, tmp_path / "r.pth")
    mirror.routes["/files/r.pth"] = weights
    wrong = _table(tmp_path, mirror, "cls", weights, hashlib.sha256(b"other").hexdigest(),
                   framework="torchvision", arch="resnet18", labels=str(tmp_path / "labels.txt"))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    cache = tmp_path / "cache"
    with (pytest.raises(ExportError, match="sha256 mismatch for cls"),
          open_source("cls", kind="classify", table=wrong, cache_dir=cache)):
        pass
    assert not list((cache / "checkpoints" / "cls").iterdir())
    mirror.routes["/files/r.pth"] = 404
    with (pytest.raises(ExportError, match="cannot download cls .*HTTP 404.*Offline\\? Download"),
          open_source("cls", kind="classify", table=wrong, cache_dir=cache)):
        pass
    mirror.routes["/files/r.pth"] = weights
    right = _table(tmp_path, mirror, "cls", weights, sha256_file(weights), framework="torchvision",
                   arch="resnet18", labels=str(tmp_path / "labels.txt"))
    with open_source("cls", kind="classify", table=right, cache_dir=cache) as loaded:
        assert loaded.arch == "resnet18" and loaded.card.labels == ["a", "b"]


def test_unknown_source_names_the_published_ones(tmp_path):
    with pytest.raises(ExportError, match=r"nosuch not found: not a file, an MLflow URI .* mdv6-yolov10-c"):
        _load("nosuch", kind="detect")
    with pytest.raises(ExportError, match=r"missing.pt not found"):
        _load(str(tmp_path / "missing.pt"), kind="detect")


def test_a_bad_table_lists_every_error(tmp_path):
    from export.sources import published

    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\nurl = "ftp://x"\nsha256 = "ABC"\nframework = "keras"\nfile = "x.pt"\n')
    with pytest.raises(ExportError) as err:
        published.load_table(bad)
    text = str(err.value)
    assert "models.x.url" in text and "models.x.sha256" in text and "models.x.framework" in text
    assert tomllib.loads(bad.read_text())  # the TOML itself is fine: these are schema errors


# -- MLflow ---------------------------------------------------------------------------------------
@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """A local file-store tracking server and model registry in tmp_path."""
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", store)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def test_mlflow_runs_and_models_uris(mlflow_store, tmp_path):
    client = mlflow_store
    weights = lively_state_dict("resnet18", 2, tmp_path / "classifier.pth")
    run = client.create_run(client.create_experiment("traps"))
    client.log_artifact(run.info.run_id, str(weights), artifact_path="weights")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("species")
    version = client.create_model_version("species", f"runs:/{run.info.run_id}/weights", run.info.run_id)

    for uri in (f"runs:/{run.info.run_id}/weights", f"models:/species/{version.version}"):
        with open_source(uri, kind="classify", arch="resnet18", labels=["a", "b"]) as loaded:
            assert loaded.framework == "torchvision" and loaded.card.source.url == uri
            assert loaded.card.source.sha256 == sha256_file(weights)
            downloaded = loaded.source
            assert downloaded.is_file() and tmp_path not in downloaded.parents
        assert not downloaded.exists()  # the download lived only as long as the block

    onnx = tmp_path / "classifier.onnx"
    onnx.write_bytes(b"onnx")
    client.log_artifact(run.info.run_id, str(onnx), artifact_path="weights")
    several = r"holds several model files \(classifier.onnx, classifier.pth\); name one"
    with (pytest.raises(ExportError, match=several),
          open_source(f"runs:/{run.info.run_id}/weights", kind="classify", arch="resnet18",
                      labels=["a", "b"])):
        pass
    with (pytest.raises(ExportError, match="MLflow cannot download models:/nosuch/1"),
          open_source("models:/nosuch/1", kind="classify", arch="resnet18", labels=["a", "b"])):
        pass


# -- missing extras -------------------------------------------------------------------------------
def test_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, tmp_path):
    import export.deps

    real = export.deps.importlib.import_module

    def without_torch(name, *args):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "mlflow"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(export.deps.importlib, "import_module", without_torch)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # the MLflow source sets it when unset
    weights = tmp_path / "r.pth"
    weights.write_bytes(b"x")
    one_line = r"^torchvision is not installed: pip install 'wildedge\[export\]'$"
    with pytest.raises(MissingExtraError, match=one_line):
        _load(weights, kind="classify", arch="resnet18", labels=["a"])
    with pytest.raises(MissingExtraError, match=r"pip install 'wildedge\[timm\]'"):
        _load(weights, kind="classify", arch="timm/resnet18", labels=["a"])
    with pytest.raises(MissingExtraError, match=r"pip install 'wildedge\[mlflow\]'"):
        _load("runs:/0123/weights", kind="classify", arch="resnet18", labels=["a"])


def test_missing_ultralytics_names_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError
    pt = tmp_path / "x.pt"
    pt.write_bytes(b"x")
    with pytest.raises(MissingExtraError, match=r"pip install 'wildedge\[ultralytics\]'"):
        _load(pt, kind="detect")


def test_card_of_a_published_onnx_source_is_read_back(exported_classifiers, tmp_path):
    src = exported_classifiers["resnet18"].path
    loaded = _load(src, kind="classify")
    assert loaded.card == read_card(src) and loaded.onnx_path == src
