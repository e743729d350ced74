"""Ablation baselines (ResNet, ML-GCN, MS-CAM): graph config, GCN arithmetic, loss, attention, saving and loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageClassification, BertConfig, BertModel, BertTokenizer

from sevnet_hf import (
    MODEL_TYPES,
    AUMLGCNConfig,
    AUMLGCNForAUDetection,
    AUMSCAMConfig,
    AUMSCAMForAUDetection,
    AUResNetConfig,
    AUResNetForAUDetection,
    SEVNetForAUDetection,
)
from sevnet_hf.modeling_baselines import GraphConvolution, graph_embedding_loss
from sevnet_hf.text_encoder import TextEncoder

REPO = Path(__file__).resolve().parents[1]
TEXT_WIDTH = 16
AUS = [1, 2, 4]
BASELINES = [
    (AUResNetConfig, AUResNetForAUDetection),
    (AUMLGCNConfig, AUMLGCNForAUDetection),
    (AUMSCAMConfig, AUMSCAMForAUDetection),
]


def train_labels(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(40, len(AUS), generator=generator) < 0.4).float()
    labels[:, 1] = torch.where(labels[:, 0] > 0, 1.0, labels[:, 1])  # AU2 follows AU1: a positive edge
    labels[3, 2] = 9
    return labels


def make_model(config_class, model_class, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(backbone="resnet18", aus=AUS, image_size=64, text_hidden_size=TEXT_WIDTH, gcn_hidden_sizes=[8])
    config = config_class(**{**kwargs, **overrides})
    config.set_graph_from_labels(train_labels())
    model = model_class(config)
    if hasattr(model, "set_au_text_embeddings"):
        model.set_au_text_embeddings(torch.randn(len(AUS), TEXT_WIDTH))
    return model.eval()


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------
def test_config_stores_graph_and_rejects_bad_combinations(tmp_path):
    config = AUMLGCNConfig(aus=AUS)
    assert config.global_pool == "max" and AUResNetConfig().global_pool == "avg"
    graph = config.set_graph_from_labels(train_labels())
    assert graph[0][1] == 1.0 and graph[1][0] == 1.0  # AU2 follows AU1
    config.save_pretrained(tmp_path)
    reloaded = AUMLGCNConfig.from_pretrained(tmp_path)
    assert reloaded.graph == graph and reloaded.model_type == "au_mlgcn" and reloaded.gcn_hidden_sizes == [1024]

    with pytest.raises(ValueError, match="graph is 2x2 but the config has 3 AUs"):
        AUMLGCNConfig(aus=AUS, graph=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"images x 3"):
        config.set_graph_from_labels(torch.zeros(10, 4))
    with pytest.raises(ValueError, match="graph_type"):
        AUMSCAMConfig(graph_type="knn")
    with pytest.raises(ValueError, match="graph_negative_threshold < graph_positive_threshold"):
        AUMLGCNConfig(graph_positive_threshold=0.1, graph_negative_threshold=0.2)
    with pytest.raises(ValueError, match="global_pool"):
        AUResNetConfig(global_pool="median")
    with pytest.raises(ValueError, match="set_graph_from_labels"):
        AUMLGCNForAUDetection(AUMLGCNConfig(aus=AUS, text_hidden_size=TEXT_WIDTH))

    conditional = AUMSCAMConfig(aus=AUS, graph_type="conditional")
    conditional.set_graph_from_labels(train_labels())
    assert all(conditional.graph[i][i] == 1.0 for i in range(3))  # ML-GCN adds the identity


def test_model_types_cover_every_model():
    assert MODEL_TYPES["sevnet"][1] is SEVNetForAUDetection
    assert [MODEL_TYPES[name] for name in ("resnet", "mlgcn", "mscam")] == BASELINES


# ----------------------------------------------------------------------------------------------------------------------
# Arithmetic
# ----------------------------------------------------------------------------------------------------------------------
def test_graph_convolution_is_m_h_w():
    torch.manual_seed(0)
    layer = GraphConvolution(5, 4, bias=True, bias_init=0.5)
    nodes, propagation = torch.randn(3, 5), torch.randn(3, 3)
    expected = propagation @ nodes @ layer.weight + 0.5
    torch.testing.assert_close(layer(nodes, propagation), expected)
    assert GraphConvolution(5, 4).bias is None


def test_mlgcn_logits_are_pooled_features_times_gcn_outputs():
    model = make_model(AUMLGCNConfig, AUMLGCNForAUDetection)
    graph = torch.tensor(model.config.graph, dtype=torch.float64)
    a = graph + torch.eye(3, dtype=torch.float64)
    d = torch.diag(a.abs().sum(1) ** -0.5)
    propagation = (d @ a @ d).float()
    torch.testing.assert_close(model.graph_adjacency, propagation)

    pixels = images()
    with torch.no_grad():
        out = model(pixels)
        w1, w2 = model.gcn.layers[0].weight, model.gcn.layers[1].weight
        hidden = F.leaky_relu(propagation @ model.au_text_embeddings @ w1, 0.2)
        classifiers = propagation @ hidden @ w2
        pooled = model.backbone(pixels).amax(dim=(2, 3))
    assert w1.shape == (TEXT_WIDTH, 8) and w2.shape == (8, model.config.visual_hidden_size)
    torch.testing.assert_close(out.au_embeddings, classifiers)
    torch.testing.assert_close(out.logits, pooled @ classifiers.t())


def test_resnet_pools_and_applies_one_linear_output_per_au():
    model = make_model(AUResNetConfig, AUResNetForAUDetection)
    pixels = images()
    with torch.no_grad():
        out = model(pixels)
        expected = model.backbone(pixels).mean(dim=(2, 3)) @ model.classifier.weight.t() + model.classifier.bias
    assert model.classifier.weight.shape == (3, model.config.visual_hidden_size)
    torch.testing.assert_close(out.logits, expected)


@pytest.mark.parametrize("config_class,model_class", BASELINES, ids=["resnet", "mlgcn", "mscam"])
def test_shapes_and_loss_ignore_unknown_labels(config_class, model_class):
    model = make_model(config_class, model_class, graph_embedding_loss_weight=0.0)
    pixels = images(batch=3)
    labels = torch.tensor([[1.0, 0.0, 9.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = model(pixels, labels=labels)
    assert out.logits.shape == (3, 3) and out.visual_features.shape[:2] == (3, model.config.visual_hidden_size)
    known = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    manual = F.binary_cross_entropy_with_logits(out.logits[known], labels[known], reduction="sum") / 3
    torch.testing.assert_close(out.loss, manual)
    flipped = labels.clone()
    flipped[0, 2], flipped[1, 0] = -1.0, 9.0
    torch.testing.assert_close(model(pixels, labels=flipped).loss, out.loss)
    out.loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    if hasattr(model, "gcn"):
        assert model.gcn.layers[0].weight.grad.abs().sum() > 0
        assert model.au_text_embeddings.grad is None  # the text table is a frozen buffer
        assert "au_text_embeddings" in model.state_dict() and "graph_adjacency" in model.state_dict()


def test_mscam_attention_maps_sum_to_one_and_graph_loss_is_added():
    model = make_model(AUMSCAMConfig, AUMSCAMForAUDetection, graph_embedding_loss_weight=0.5)
    pixels = images()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 9.0, 1.0]])
    out = model(pixels, labels=labels, output_attentions=True)
    height, width = out.visual_features.shape[-2:]
    assert out.au_attention_maps.shape == (2, 3, height, width)
    assert (out.au_attention_maps >= 0).all()
    torch.testing.assert_close(out.au_attention_maps.sum(dim=(-2, -1)), torch.ones(2, 3))
    assert model(pixels).au_attention_maps is None

    cosine = F.normalize(out.au_embeddings, dim=-1) @ F.normalize(out.au_embeddings, dim=-1).t()
    target = torch.sign(torch.tensor(model.config.graph) * 2)  # the PCC graph is symmetric
    pairs = ~torch.eye(3, dtype=torch.bool)
    graph_term = ((cosine - target)[pairs] ** 2).mean()
    torch.testing.assert_close(graph_embedding_loss(out.au_embeddings, torch.tensor(model.config.graph)), graph_term)
    bce = F.binary_cross_entropy_with_logits(out.logits[labels != 9], labels[labels != 9], reduction="sum") / 2
    torch.testing.assert_close(out.loss, bce + 0.5 * graph_term)


def test_graph_models_keep_their_au_set_and_replace_graphs():
    model = make_model(AUMLGCNConfig, AUMLGCNForAUDetection)
    with pytest.raises(ValueError, match="cannot change its AU set"):
        model.set_au_descriptions(aus=[1, 2])
    model.set_graph([[0, 0, 0], [0, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(model.graph_adjacency, torch.eye(3))
    assert model.config.graph[0][1] == 0.0
    assert torch.equal(model.graph_tensor(torch.device("cpu")), torch.zeros(3, 3))  # what the graph loss reads


def test_from_backbones_loads_backbone_file_and_builds_text_table(tmp_path):
    vocab = tmp_path / "vocab.txt"
    words = "the brow lip corner raiser puller inner outer lowerer cheek lid tightener nose wrinkler upper".split()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=32, hidden_size=TEXT_WIDTH, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).eval()
    encoder = TextEncoder(bert, BertTokenizer(str(vocab)), pooling="mean", name="tiny-bert")

    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="")
    save_file(source.state_dict(), str(tmp_path / "resnet18.safetensors"))

    config = AUMSCAMConfig(aus=AUS, gcn_hidden_sizes=[8])
    config.set_graph_from_labels(train_labels())
    descriptions = {"AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU4": "brow lowerer"}
    model = AUMSCAMForAUDetection.from_backbones(
        config, backbone_weights=tmp_path / "resnet18.safetensors", text_encoder=encoder, au_descriptions=descriptions
    )
    assert model.config.text_hidden_size == TEXT_WIDTH and model.config.text_encoder_name_or_path == "tiny-bert"
    assert model.has_au_text_embeddings and model.config.au_descriptions == descriptions
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)

    resnet = AUResNetForAUDetection.from_backbones(
        AUResNetConfig(aus=AUS), backbone_weights=tmp_path / "resnet18.safetensors"
    )
    torch.testing.assert_close(resnet.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


# ----------------------------------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class,model_class", BASELINES, ids=["resnet", "mlgcn", "mscam"])
def test_save_and_load_give_identical_logits(tmp_path, config_class, model_class):
    extra = {"graph_embedding_loss_weight": 0.5} if model_class is AUMSCAMForAUDetection else {}
    model = make_model(config_class, model_class, **extra).eval()
    pixels = images()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 9.0, 1.0]])
    with torch.no_grad():
        expected = model(pixels, labels=labels)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == f"modeling_baselines.{model_class.__name__}"
    assert "AutoModel" not in config["auto_map"]  # no bare baseline model: AutoModel is for bare models
    for loader in (model_class, AutoModelForImageClassification):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert type(reloaded) is model_class
        with torch.no_grad():
            out = reloaded(pixels, labels=labels)
        assert torch.equal(out.logits, expected.logits)
        torch.testing.assert_close(out.loss, expected.loss)  # MS-CAM: the graph loss reads the graph after loading


_REMOTE_LOADER = """
import sys
sys.modules["sevnet_hf"] = None  # the package must not be importable: only the files in each folder count
import torch
from transformers import AutoModelForImageClassification
pixels = torch.load(sys.argv[1])
results = {}
for folder in sys.argv[3:]:
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert "sevnet_hf" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        results[folder] = (type(model).__name__, model(pixels).logits)
torch.save(results, sys.argv[2])
"""


def test_trust_remote_code_loads_each_baseline_without_the_package(tmp_path):
    pixels = images()
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = {}
    for config_class, model_class in BASELINES:
        folder = tmp_path / config_class.model_type
        model = make_model(config_class, model_class)
        model.save_pretrained(folder)
        with torch.no_grad():
            expected[str(folder)] = (model_class.__name__, model(pixels).logits)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", _REMOTE_LOADER, str(tmp_path / "pixels.pt"), str(tmp_path / "out.pt"), *expected],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")
    for folder, (name, logits) in expected.items():
        assert results[folder][0] == name
        assert torch.equal(results[folder][1], logits), folder
