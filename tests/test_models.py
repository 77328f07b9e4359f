"""load_model: every kind of spec, its preprocessing, and every way a spec can be wrong."""
from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
import torchvision
from conftest import TinyNet
from torch import nn

import cnnviz
from cnnviz import CnnvizError, CnnvizWarning

FACTORY_SOURCE = """
import torch
from torch import nn


class Lenet(nn.Module):
    input_size = (28, 28)
    mean = (0.1307,)
    std = (0.3081,)
    class_names = [str(d) for d in range(10)]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def make():
    return Lenet()


def plain():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))


def broken():
    raise RuntimeError("factory exploded")


def not_a_model():
    return 42
"""


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    """A folder with a user's module of factories, as the current directory."""
    name = f"usernets_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, name
    sys.modules.pop(name, None)


def state_dict_equal(a: nn.Module, b: dict) -> bool:
    mine = a.state_dict()
    return mine.keys() == b.keys() and all(torch.equal(mine[k], b[k]) for k in b)


# --- torchvision ------------------------------------------------------------------------------


def test_torchvision_random_weights_warn_and_carry_the_architecture_preprocessing():
    with pytest.warns(CnnvizWarning, match="random weights"):
        loaded = cnnviz.load_model("torchvision:resnet18")
    assert isinstance(loaded.module, torchvision.models.ResNet) and not loaded.module.training
    assert loaded.weights == "random"
    pre = loaded.preprocessing
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx((0.229, 0.224, 0.225))
    assert pre.input_size == (224, 224) and pre.resize == 256 and pre.channels == 3 and pre.known
    assert len(loaded.class_names) == 1000 and loaded.class_names[281] == "tabby"


def test_inception_input_size_comes_from_its_weights_meta():
    with pytest.warns(CnnvizWarning):
        loaded = cnnviz.load_model("torchvision:inception_v3")
    assert loaded.preprocessing.input_size == (299, 299)


def test_torchvision_state_dict_file_roundtrip(tmp_path):
    source = torchvision.models.resnet18()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CnnvizWarning)  # no random-weights warning
        loaded = cnnviz.load_model("torchvision:resnet18", weights=path)
    assert state_dict_equal(loaded.module, source.state_dict())
    assert loaded.weights == str(path)


def test_checkpoint_wrappers_and_dataparallel_prefixes(tmp_path):
    source = torchvision.models.resnet18()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    loaded = cnnviz.load_model("torchvision:resnet18", weights=str(path))
    assert state_dict_equal(loaded.module, source.state_dict())


def test_fine_tuned_class_count_is_read_from_the_state_dict(tmp_path):
    source = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "finetuned.pt"
    torch.save(source.state_dict(), path)
    loaded = cnnviz.load_model("torchvision:resnet18", weights=path)
    assert loaded.module.fc.out_features == 10
    assert loaded.class_names is None  # ImageNet names would be wrong for 10 outputs
    assert state_dict_equal(loaded.module, source.state_dict())


def test_googlenet_state_dict_without_auxiliary_heads(tmp_path):
    source = torchvision.models.googlenet(aux_logits=False, init_weights=True)
    path = tmp_path / "googlenet.pt"
    torch.save(source.state_dict(), path)
    loaded = cnnviz.load_model("torchvision:googlenet", weights=path)
    assert loaded.module.aux1 is None


def test_torchvision_named_weights_load_through_torchvisions_cache(tmp_path, monkeypatch):
    # torchvision's own mechanism: a file already in the hub cache is used without downloading.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), cached)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CnnvizWarning)
        loaded = cnnviz.load_model("torchvision:resnet18", weights="IMAGENET1K_V1")
    assert loaded.weights == "IMAGENET1K_V1"
    assert state_dict_equal(loaded.module, source.state_dict())
    assert cnnviz.load_model("torchvision:resnet18", weights="ResNet18_Weights.IMAGENET1K_V1").weights == "IMAGENET1K_V1"
    assert cnnviz.load_model("torchvision:resnet18", weights="default").weights == "IMAGENET1K_V1"


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    for variable in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # a closed port: fails at once
    with pytest.raises(CnnvizError, match="could not get the .* weights of torchvision:squeezenet1_1.*weights='PATH'"):
        cnnviz.load_model("torchvision:squeezenet1_1", weights="IMAGENET1K_V1")
    assert not any(tmp_path.rglob("*.pth")), "a partial download was left behind"


@pytest.mark.parametrize(
    ("spec", "weights", "message"),
    [
        ("torchvision:resnt18", None, "no classification model 'resnt18'; did you mean 'resnet18'"),
        ("torchvison:resnet18", None, "did you mean 'torchvision:resnet18'"),
        ("resnet18", None, "did you mean 'torchvision:resnet18'"),
        ("", None, "unknown model spec"),
        ("what is this", None, "unknown model spec"),
        ("torchvision:resnet18", "IMAGENET1K_V9", "available: IMAGENET1K_V1, DEFAULT"),
        ("torchvision:resnet18", "AlexNet_Weights.IMAGENET1K_V1", "not a weights name of torchvision:resnet18"),
        ("torchvision:resnet18", "missing/weights.pt", "does not exist"),
        ("builtin:nothing", None, "no built-in model 'nothing'"),
    ],
)
def test_bad_specs(spec, weights, message):
    with pytest.raises(CnnvizError, match=message):
        cnnviz.load_model(spec, weights)


def test_weights_for_another_architecture(tmp_path):
    path = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    with pytest.raises(CnnvizError, match=r"do not fit torchvision:resnet18: \d+ missing .*unexpected .*another architecture"):
        cnnviz.load_model("torchvision:resnet18", weights=path)


# --- files ------------------------------------------------------------------------------------


def test_torchscript_archive(tmp_path):
    model = TinyNet().eval()
    path = tmp_path / "tiny.ts.pt"
    x = torch.randn(2, 3, 16, 16)
    torch.jit.save(torch.jit.trace(model, x), str(path))
    loaded = cnnviz.load_model(str(path))
    assert not loaded.preprocessing.known and loaded.preprocessing.channels == 3
    torch.testing.assert_close(cnnviz.capture(loaded, x, "logits")["logits"], model(x))
    with pytest.raises(CnnvizError, match="TorchScript archive with its own weights"):
        cnnviz.load_model(str(path), weights=path)


def test_pickled_model_needs_trust(tmp_path):
    model = torchvision.models.resnet18()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(CnnvizError, match="fully pickled model.*trusted=True"):
        cnnviz.load_model(str(path))
    loaded = cnnviz.load_model(str(path), trusted=True)
    assert state_dict_equal(loaded.module, model.state_dict())
    # As a weights file it is refused too, with the way to load it.
    with pytest.raises(CnnvizError, match="pickled Python objects.*trusted=True"):
        cnnviz.load_model("torchvision:resnet18", weights=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"not a checkpoint at all" * 20, "is it corrupt"),
        (b"PK\x03\x04" + b"\x00" * 64, "is it corrupt"),
    ],
)
def test_corrupt_files(tmp_path, content, message):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CnnvizError, match=message):
        cnnviz.load_model(str(path))
    with pytest.raises(CnnvizError, match=message):
        cnnviz.load_model("torchvision:resnet18", weights=path)
    assert path.read_bytes() == content  # the user's file is never changed


class Hostile:
    """What a hostile "weights" file holds: unpickling it runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_hostile_pickle_is_refused_saying_what_it_would_run(tmp_path):
    marker = tmp_path / "it-ran"
    path = tmp_path / "hostile.pt"
    torch.save({"state_dict": Hostile(f"touch {marker}")}, path)
    content = path.read_bytes()
    system = f"{os.system.__module__}.system"  # posix.system
    for arguments, instead in [({"spec": str(path)}, "a model saved with torch.save(model, path)"),
                               ({"spec": str(path), "trusted": True}, "a model saved with torch.save(model, path)"),
                               ({"spec": "torchvision:resnet18", "weights": path}, "a state dict saved with")]:
        with pytest.raises(CnnvizError) as refused:
            cnnviz.load_model(**arguments)
        message = str(refused.value)
        assert message.startswith(f"cnnviz refused {path}: loading it would call {system}, so it runs code"), message
        assert instead in message and "weights_only" not in message and len(message.splitlines()) == 1, message
    assert not marker.exists() and path.read_bytes() == content


def test_a_garbage_file_is_one_error_without_torchs_warnings(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x80\x04garbage, not a checkpoint" * 8)  # a pickle protocol torch warns of, then garbage
    for arguments in ({"spec": str(path)}, {"spec": "torchvision:resnet18", "weights": path}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CnnvizError) as refused:
                cnnviz.load_model(**arguments)
        assert [str(w.message) for w in caught] == []
        assert str(refused.value) == (f"cannot read {path}: it is not a file written by torch.save or torch.jit.save "
                                      "(unreadable pickle: Unsupported operand 103); is it corrupt or of another format?")


@pytest.mark.parametrize(("error", "reason"), [
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                  "internal miniz error. If you are seeing this error, there is a high likelihood that your checkpoint "
                  "file is corrupted."), "PytorchStreamReader failed reading zip archive: failed finding central directory"),
    (RuntimeError("[enforce fail at inline_container.cc:180] . file in archive is not in a subdirectory: a.txt"),
     "file in archive is not in a subdirectory: a.txt"),
    (RuntimeError("Invalid magic number; corrupt file?"), "Invalid magic number"),
    (KeyError("101"), "KeyError '101'"),
    (EOFError(), "the file ends early: cut short?"),
    (RuntimeError("word " * 40), "word " * 19 + "word ..."),
])
def test_why_torch_could_not_read_a_file_is_said_in_whole_words(error, reason):
    from cnnviz.models.from_file import reason_of

    assert reason_of(error) == reason


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "truncated.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CnnvizError, match="cannot read .*truncated.pt"):
        cnnviz.load_model("torchvision:resnet18", weights=path)


def test_state_dict_as_a_model_and_folders(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(CnnvizError, match="state dict .*no architecture.*spec='torchvision:NAME' with weights="):
        cnnviz.load_model(str(path))
    with pytest.raises(CnnvizError, match="is a folder"):
        cnnviz.load_model("torchvision:resnet18", weights=str(tmp_path) + "/")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CnnvizError, match="holds a list, not a model"):
        cnnviz.load_model(str(tmp_path / "list.pt"))
    with pytest.raises(CnnvizError, match="does not hold a state dict"):
        cnnviz.load_model("torchvision:resnet18", weights=tmp_path / "list.pt")


# --- factories --------------------------------------------------------------------------------


def test_factory_with_declared_preprocessing(factory_dir):
    _, name = factory_dir
    loaded = cnnviz.load_model(f"{name}:make")
    pre = loaded.preprocessing
    assert pre.known and pre.mean == (0.1307,) and pre.std == (0.3081,) and pre.input_size == (28, 28)
    assert pre.channels == 1 and loaded.class_names[3] == "3"
    table = cnnviz.layer_table(loaded)
    assert table["conv2"].output_shape == [(16, 8, 8)]


def test_factory_weights_and_python_file_form(factory_dir, tmp_path):
    _, name = factory_dir
    source = cnnviz.load_model(f"{name}:make").module
    torch.save(source.state_dict(), tmp_path / "lenet.pt")
    loaded = cnnviz.load_model(f"{tmp_path / (name + '.py')}:make", weights=tmp_path / "lenet.pt")
    assert state_dict_equal(loaded.module, source.state_dict())


def test_factory_without_declarations_gets_identity_channels_from_first_conv(factory_dir):
    _, name = factory_dir
    with pytest.warns(cnnviz.CnnvizWarning, match="declares no input size; using 32x32"):
        loaded = cnnviz.load_model(f"{name}:plain")
    pre = loaded.preprocessing
    assert not pre.known and pre.mean == (0.0,) and pre.std == (1.0,) and pre.input_size == (32, 32)
    assert "the first Linear takes 3600 features" in pre.size_from  # flatten then Linear(4 x 30 x 30): only 32 x 32 runs
    assert cnnviz.layer_table(loaded)["3"].output_shape == [(2,)]
    with pytest.raises(CnnvizError, match=r"dry run on one 1x224x224 image failed.*input_size=\(H, W\)"):
        cnnviz.layer_table(loaded, input_size=224)


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("maek", "has no function 'maek'; did you mean 'make'"),
        ("broken", r"calling .*:broken\(\) failed: RuntimeError: factory exploded"),
        ("not_a_model", "returned a int, not a torch.nn.Module"),
    ],
)
def test_factory_errors(factory_dir, attribute, message):
    _, name = factory_dir
    with pytest.raises(CnnvizError, match=message):
        cnnviz.load_model(f"{name}:{attribute}")


def test_factory_module_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnvizError, match="cannot import 'nosuchpackage.nets'"):
        cnnviz.load_model("nosuchpackage.nets:make")
    with pytest.raises(CnnvizError, match="does not exist"):
        cnnviz.load_model("nets.py:make")


# --- overrides and wrapping -------------------------------------------------------------------


def test_overrides(factory_dir):
    _, name = factory_dir
    loaded = cnnviz.load_model(f"{name}:plain", mean=0.5, std=[0.25], input_size=(32, 40))
    pre = loaded.preprocessing
    assert pre.mean == (0.5,) and pre.std == (0.25,) and pre.input_size == (32, 40) and pre.known
    with pytest.raises(CnnvizError, match="mean has 3 values but the model takes 1 input channel"):
        cnnviz.load_model(f"{name}:plain", mean=(0.1, 0.2, 0.3))
    with pytest.raises(CnnvizError, match="std greater than 0"):
        cnnviz.load_model(f"{name}:plain", std=0)
    with pytest.raises(CnnvizError, match="input size must be"):
        cnnviz.load_model(f"{name}:plain", input_size=(0, 3))


def test_wrapping_a_users_module_leaves_it_as_it_is():
    model = TinyNet().train()
    loaded = cnnviz.load_model(model, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), class_names=list("abcd"))
    assert loaded.module is model and model.training
    assert cnnviz.layer_ref(loaded, "logits:c").channel == 2


def test_normalize_and_denormalize_are_inverse():
    pre = cnnviz.Preprocessing(mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), known=True)
    images = torch.rand(2, 3, 5, 5)
    normalized = pre.normalize(images)
    torch.testing.assert_close(normalized[:, 1], (images[:, 1] - 0.5) / 0.3)
    torch.testing.assert_close(pre.denormalize(normalized), images)
    with pytest.raises(CnnvizError, match="images have 1 channels but the model takes 3"):
        pre.normalize(torch.rand(1, 5, 5))


def test_device_choice():
    assert cnnviz.resolve_device("cpu") == torch.device("cpu")
    assert cnnviz.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CnnvizError, match="unknown device 'gpu'"):
        cnnviz.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(CnnvizError, match="CUDA is not available"):
            cnnviz.resolve_device("cuda")


def test_checkpoints_without_num_batches_tracked_load(tmp_path):
    source = torchvision.models.resnet18()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    loaded = cnnviz.load_model("torchvision:resnet18", weights=tmp_path / "old.pt")
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state.items())


def test_a_corrupt_file_in_torchvisions_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(CnnvizError, match="a broken file there must be deleted"):
        cnnviz.load_model("torchvision:resnet18", weights="IMAGENET1K_V1")


def test_unusable_declarations_are_ignored_with_a_warning():
    model = TinyNet()
    model.input_size = "224x224"
    model.mean, model.std = (0.5, 0.5, 0.5), (0.2, 0.0, 0.2)
    with pytest.warns(CnnvizWarning) as caught:
        loaded = cnnviz.load_model(model)
    messages = " ".join(str(w.message) for w in caught)
    assert "input_size" in messages and "mean and std" in messages
    assert loaded.preprocessing.input_size == (224, 224) and not loaded.preprocessing.known


def test_torchscript_given_as_weights_and_python_file_without_factory(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(TinyNet().eval(), torch.randn(1, 3, 8, 8)), str(path))
    with pytest.raises(CnnvizError, match="TorchScript archive.*as the model \\(spec=.*without weights="):
        cnnviz.load_model("torchvision:resnet18", weights=path)
    (tmp_path / "nets.py").write_text("")
    with pytest.raises(CnnvizError, match="nets.py:FUNCTION"):
        cnnviz.load_model(str(tmp_path / "nets.py"))


def test_trusted_checkpoint_holding_a_whole_model(tmp_path):
    model = torchvision.models.resnet18()
    torch.save({"model": model, "epoch": 7}, tmp_path / "ckpt.pt")
    loaded = cnnviz.load_model(str(tmp_path / "ckpt.pt"), trusted=True)
    assert state_dict_equal(loaded.module, model.state_dict())


def test_factory_files_import_their_neighbours_and_report_inner_import_errors(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "blocks.py").write_text("from torch import nn\ndef block():\n    return nn.Conv2d(3, 4, 3)\n")
    (project / "model.py").write_text("from torch import nn\nimport blocks\ndef make():\n    return nn.Sequential(blocks.block())\n")
    loaded = cnnviz.load_model(f"{project / 'model.py'}:make")
    assert isinstance(loaded.module[0], nn.Conv2d)
    assert str(project) not in sys.path
    name = f"needs_missing_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text("import not_installed_anywhere\ndef make():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnvizError, match=f"importing {name} failed: No module named 'not_installed_anywhere'"):
        cnnviz.load_model(f"{name}:make")


def test_a_factory_file_leaves_its_folder_as_it_was_and_sys_exit_is_an_error(tmp_path):
    (tmp_path / "neighbour.py").write_text("WIDTH = 4\n")
    (tmp_path / "net.py").write_text(
        "import torch\nimport neighbour\n\n"
        "def make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, neighbour.WIDTH, 3))\n\n"
        "def leave():\n    raise SystemExit(3)\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    writes = sys.dont_write_bytecode
    loaded = cnnviz.load_model(f"{tmp_path / 'net.py'}:make")
    assert loaded.module[0].out_channels == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no __pycache__/ next to the user's files
    assert sys.dont_write_bytecode == writes
    with pytest.raises(CnnvizError, match=r"leave\(\) failed: SystemExit: 3"):
        cnnviz.load_model(f"{tmp_path / 'net.py'}:leave")
    sys.modules.pop("neighbour", None)
