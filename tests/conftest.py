"""Shared fixtures: the real assets in ../shared/assets (skipped cleanly when absent) and stamped models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("WILDEDGE_ASSETS", REPO.parent / "shared" / "assets"))

# name -> (asset file, preset, labels file, input size)
DETECTORS = {
    "yolox": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
    "nanodet": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "fastestdet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
}


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared test assets ({path} is absent; set WILDEDGE_ASSETS or place ../shared/assets)")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder; skips the test when it is absent (a user's fresh clone)."""
    return _require(ASSETS)


@pytest.fixture(scope="session")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three real detectors, stamped with their presets: name -> stamped ONNX path."""
    from edge.inference.labels import read_labels
    from edge.inference.stamp import stamp_file

    _require(ASSETS)
    out_dir = tmp_path_factory.mktemp("stamped")
    models = {}
    for name, (model, preset, labels) in DETECTORS.items():
        dst = out_dir / f"{name}.onnx"
        stamp_file(_require(ASSETS / model), dst, preset=preset, labels=read_labels(ASSETS / labels))
        models[name] = dst
    return models


@pytest.fixture(scope="session")
def classifier_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2-int8 (ImageNet) stamped with the imagenet preset."""
    from edge.inference.labels import read_labels
    from edge.inference.stamp import stamp_file

    src = _require(ASSETS / "mobilenetv2_int8" / "mobilenetv2-12-int8.onnx")
    dst = tmp_path_factory.mktemp("stamped_cls") / "mobilenetv2_int8.onnx"
    stamp_file(src, dst, preset="imagenet", labels=read_labels(ASSETS / "mobilenetv2_int8" / "synset.txt"),
               input_size=(224, 224))
    return dst


# -- export stage ---------------------------------------------------------------------------------
EXPORT_IMGSZ = 320  # small inputs keep the exports of the test suite to seconds


@pytest.fixture(scope="session")
def ultralytics_offline(tmp_path_factory: pytest.TempPathFactory):
    """Ultralytics (skipped when absent), its settings file in a temp folder and its network features off."""
    patch = pytest.MonkeyPatch()
    patch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
    patch.setenv("YOLO_OFFLINE", "1")
    patch.setenv("YOLO_AUTOINSTALL", "False")
    try:
        yield pytest.importorskip("ultralytics")
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def parity_photos() -> list[Path]:
    """Real photos for parity checks (COCO animals and LILA camera traps); empty without the assets."""
    from export.to_onnx import parity_images

    folders = [ASSETS / "coco_val2017_animal_samples", ASSETS / "camera_traps_lila" / "images"]
    return parity_images(folders) if all(f.is_dir() for f in folders) else []


def _photo_batch(photos: list[Path], size: int):
    """Photos letterboxed to ``size`` as the device does; without the assets, the synthetic frames the
    parity check then runs on (batch-norm statistics measured on them keep activations in range)."""
    import numpy as np
    import torch

    from edge.imaging import read_image
    from edge.inference.preprocess import preprocess
    from edge.inference.presets import build_card
    from export.to_onnx import synthetic_frames

    spec = build_card("ultralytics", labels=["x"], input_size=(size, size)).preprocess
    images = [read_image(p).image for p in photos] if photos else [image for _, image in synthetic_frames()]
    return torch.from_numpy(np.concatenate([preprocess(image, spec)[0] for image in images]))


def enliven(model, batch, last_layers, seed: int = 0) -> None:
    """Give an untrained model outputs that vary with the photo, so that parity compares something.

    Untrained heads start constant (zero weights, one bias), and batch norm's default statistics
    (mean 0, variance 1) let activations vanish or explode through the network. ``last_layers`` get
    random weights of unit gain; batch-norm statistics are measured on ``batch``.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in last_layers:
            layer.weight.normal_(0.0, layer.weight[0].numel() ** -0.5, generator=gen)
            if layer.bias is not None:
                layer.bias.normal_(0.0, 0.5, generator=gen)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the batch
        if norms:
            model.train()
            model(batch)
            model.eval()


def lively_yolo(yaml: str | Path, path: Path, photos: list[Path], *, rtdetr: bool = False) -> Path:
    """An untrained Ultralytics detector made lively, saved at ``path`` as training saves checkpoints."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    torch.manual_seed(0)
    model = (RTDETRDetectionModel if rtdetr else DetectionModel)(str(yaml), verbose=False)
    head = model.model[-1]
    last = [m for name, m in head.named_modules()
            if isinstance(m, torch.nn.Conv2d) and name.rsplit(".", 1)[-1].isdigit()
            or isinstance(m, torch.nn.Linear) and "score" in name]
    enliven(model, _photo_batch(photos, EXPORT_IMGSZ), last)
    torch.save({"model": model, "train_args": {"imgsz": EXPORT_IMGSZ}}, path)
    return path


def lively_state_dict(arch: str, num_classes: int, path: Path, *, wrap: bool = False) -> Path:
    """A torchvision ``arch`` state dict with lively outputs saved at ``path``; ``wrap`` nests it as
    training frameworks do (under ``state_dict``, keys prefixed ``module.``)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    batch = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1)) * 4 - 2
    enliven(model, batch, [m for m in model.modules() if isinstance(m, torch.nn.Linear)])
    state = model.state_dict()
    if wrap:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def class_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five species names, one per line."""
    path = tmp_path_factory.mktemp("labels") / "species.txt"
    path.write_text("red fox\nroe deer\nbadger\nwild boar\nhedgehog\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def exported_classifiers(tmp_path_factory, parity_photos, class_labels) -> dict:
    """resnet18, mobilenet_v3_small, efficientnet_b0 (weights=None, saved state dicts) exported to FP32:
    arch -> Fp32Result."""
    pytest.importorskip("torchvision")
    from export.sources import load_labels, open_source
    from export.to_onnx import to_onnx

    folder = tmp_path_factory.mktemp("classifiers")
    labels = load_labels(class_labels)
    results = {}
    for arch in ("resnet18", "mobilenet_v3_small", "efficientnet_b0"):
        weights = lively_state_dict(arch, len(labels), folder / f"{arch}.pth", wrap=arch == "resnet18")
        with open_source(str(weights), kind="classify", arch=arch, labels=labels) as loaded:
            results[arch] = to_onnx(loaded, folder / f"{arch}.onnx", images=parity_photos)
    return results


@pytest.fixture(scope="session")
def exported_detectors(tmp_path_factory, ultralytics_offline, parity_photos) -> dict:
    """yolov8n, yolo11n and yolov10n (untrained, lively checkpoints) exported to FP32 at 320 px:
    name -> Fp32Result."""
    from export.sources import open_source
    from export.to_onnx import to_onnx

    folder = tmp_path_factory.mktemp("detectors")
    results = {}
    for name in ("yolov8n", "yolo11n", "yolov10n"):
        checkpoint = lively_yolo(f"{name}.yaml", folder / f"{name}.pt", parity_photos)
        with open_source(str(checkpoint), kind="detect") as loaded:
            results[name] = to_onnx(loaded, folder / f"{name}.onnx", images=parity_photos)
    return results


# -- MQTT: a real mosquitto on 127.0.0.1 ----------------------------------------------------------
from collections.abc import Callable, Iterator
from typing import Any

from broker import Mosquitto, TlsFiles, find_tool, make_tls

MOSQUITTO_MISSING = "needs mosquitto (apt install mosquitto); scripts/test.sh installs it when run as root"


@pytest.fixture(scope="session")
def mosquitto_bin() -> Path:
    """The mosquitto executable; skips the test when it is not installed (a user's fresh machine)."""
    found = find_tool("mosquitto")
    if found is None:
        pytest.skip(MOSQUITTO_MISSING)
    return found


@pytest.fixture
def broker_factory(mosquitto_bin: Path, tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Starts brokers with ``Mosquitto``'s options (``tls=``, ``passwords=``, ``acl=``...), each in its own
    folder of ``tmp_path``; all are stopped at teardown."""
    made: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(made)}", binary=mosquitto_bin, **options)
        made.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in made:
            broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A started plain broker: anonymous clients allowed, persistence on."""
    return broker_factory()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, server and "trap-01" client certificates, and a rogue client (``make_tls``)."""
    return make_tls(tmp_path_factory.mktemp("tls"))


# -- PostgreSQL: a throwaway cluster on a Unix socket ----------------------------------------------
from pg import PostgresCluster, find_bindir

POSTGRES_MISSING = ("needs the PostgreSQL server (apt install postgresql: initdb and postgres); "
                    "scripts/test.sh installs it when run as root")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A started throwaway cluster (no TCP port, fsync off), stopped at the end of the session; skips the
    test when the server binaries are not installed (a user's fresh machine)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(POSTGRES_MISSING)
    with PostgresCluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh empty database of its own, dropped after the test."""
    name = postgres.create_database()
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def collector_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A collector database URL, once a fresh SQLite file and once a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    return request.getfixturevalue("pg_url")
